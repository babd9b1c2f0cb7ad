package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers/bmc"
	"github.com/pogolab/pogo/drivers/bmc/blob"
)

func init() { RegisterVerbs("bmc", bmcVerbs) }

func bmcVerbs(c *client.Client, path string) []*cobra.Command {
	d := bmc.NewClient(c.Conn(), path)
	var (
		typ, image, sig string
		ignoreUpdate    bool
	)
	update := &cobra.Command{
		Use:   "update --image FILE --signature FILE",
		Short: "Upload, verify and apply a firmware image through the BMC's flash blobs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := os.Open(image)
			if err != nil {
				return fmt.Errorf("image: %w", err)
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return fmt.Errorf("image: %w", err)
			}
			if !st.Mode().IsRegular() {
				return fmt.Errorf("image %s: not a regular file", image)
			}
			s, err := os.ReadFile(sig)
			if err != nil {
				return fmt.Errorf("signature: %w", err)
			}
			view := newProgressView(cmd.ErrOrStderr())
			start := time.Now()
			err = d.Update(cmd.Context(), bmc.Request{
				Type: typ, Image: f, Size: st.Size(), Signature: s,
				IgnoreUpdate: ignoreUpdate, Progress: view.show,
			})
			view.end()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "update applied: %s in %s\n", mib(st.Size()), time.Since(start).Round(100*time.Millisecond))
			return nil
		},
	}
	fl := update.Flags()
	fl.StringVar(&typ, "type", "image", "what to update: image, tarball, bios or a /flash/<name> blob")
	fl.StringVar(&image, "image", "", "firmware image file")
	fl.StringVar(&sig, "signature", "", "signature file the BMC verifies the image with")
	fl.BoolVar(&ignoreUpdate, "ignore-update", false, "do not wait for the update's result (BMCs that reboot at once)")
	_ = update.MarkFlagRequired("image")
	_ = update.MarkFlagRequired("signature")

	return []*cobra.Command{
		update,
		{
			Use: "blobs", Short: "List the BMC's blobs with their state", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				bs, err := d.Blobs(cmd.Context())
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "BLOB\tSTATE\tSIZE\tMETADATA")
				for _, b := range bs {
					if b.Err != nil {
						fmt.Fprintf(tw, "%s\t?\t\t%v\n", b.ID, b.Err)
						continue
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%x\n", b.ID, b.State, b.Size, b.Metadata)
				}
				return tw.Flush()
			},
		},
		{
			Use: "stat BLOB", Short: "Print one blob's state, size and metadata", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				b, err := d.Stat(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "blob %s\nstate %#04x (%s)\nsize %d\nmetadata %x\n", b.ID, uint16(b.State), b.State, b.Size, b.Metadata)
				return nil
			},
		},
	}
}

// progressView shows an update: a bar redrawn in place on a terminal,
// otherwise a line per message and per lineEvery of bytes, which reads
// well in CI logs.
type progressView struct {
	w     io.Writer
	tty   bool
	phase blob.Phase
	began time.Time
	last  time.Time
	msg   string
	open  bool // a bar is drawn without its newline
}

const lineEvery = 2 * time.Second

func newProgressView(w io.Writer) *progressView {
	f, ok := w.(*os.File)
	return &progressView{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

func (v *progressView) show(p blob.Progress) {
	now := time.Now()
	if p.Phase != v.phase {
		v.end()
		v.phase, v.began, v.last, v.msg = p.Phase, now, time.Time{}, ""
	}
	if p.Message != "" {
		// The updater repeats a verdict when it closes the action.
		if p.Message != v.msg {
			v.end()
			fmt.Fprintf(v.w, "%s: %s\n", p.Phase, p.Message)
			v.msg = p.Message
		}
		return
	}
	if p.Total <= 0 {
		return
	}
	rate := ""
	if el := now.Sub(v.began).Seconds(); el > 0.2 {
		rate = fmt.Sprintf(" %.1f MB/s", float64(p.Done)/el/1e6)
	}
	pct := int(p.Done * 100 / p.Total)
	if v.tty {
		const width = 30
		fill := int(p.Done * width / p.Total)
		fmt.Fprintf(v.w, "\r%-8s [%s%s] %3d%% %s/%s%s\x1b[K", p.Phase,
			strings.Repeat("#", fill), strings.Repeat("-", width-fill), pct, mib(p.Done), mib(p.Total), rate)
		v.open = true
		return
	}
	if p.Done == p.Total || now.Sub(v.last) >= lineEvery {
		v.last = now
		fmt.Fprintf(v.w, "%s: %s/%s (%d%%)%s\n", p.Phase, mib(p.Done), mib(p.Total), pct, rate)
	}
}

// end finishes a drawn bar's line.
func (v *progressView) end() {
	if v.open {
		fmt.Fprintln(v.w)
		v.open = false
	}
}

func mib(n int64) string {
	if n < 1<<10 {
		return fmt.Sprintf("%d B", n)
	}
	if n < 1<<20 {
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
