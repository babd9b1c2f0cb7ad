package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers/console"
	"github.com/pogolab/pogo/drivers/flasher"
)

func init() { RegisterVerbs("flasher", flasherVerbs) }

func flasherVerbs(c *client.Client, path string) []*cobra.Command {
	fl := flasher.NewClient(c.Conn(), path)
	var o flashFlags
	flash := &cobra.Command{
		Use:   "flash FILE|URL|oci://REF",
		Short: "Flash an image to the board's storage through its flasher",
		Long: `Flash an image (raw, or xz/gz/zst/bz2 compressed: detected and undone on the
exporter) to the board. A local FILE is streamed to the exporter, an http(s)
URL is fetched by the exporter (by the board itself with --direct), oci://REF
is pulled on the exporter. IMAGE.bmap beside a local image (or --bmap) writes
only the mapped ranges. The board is powered off afterwards.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runFlash(cmd.Context(), fl, args[0], o, cmd.ErrOrStderr())
		},
	}
	f := flash.Flags()
	f.StringVar(&o.partition, "partition", "", "target name of the flasher bundle, or a /dev path (default: the bundle's default target)")
	f.StringVar(&o.checksum, "os-image-checksum", "", "SHA256 checksum of the uncompressed OS image (direct value)")
	f.StringVar(&o.checksumFile, "os-image-checksum-file", "", "file containing the SHA256 checksum of the uncompressed OS image")
	f.StringVar(&o.bmap, "bmap", "", "bmaptool block map of the image (default: IMAGE.bmap beside a local image)")
	f.BoolVar(&o.direct, "direct", false, "let the board fetch an http(s) URL itself")
	f.BoolVar(&o.forceHTTP, "force-exporter-http", false, "force use of the exporter's HTTP server")
	f.StringVar(&o.bundle, "force-flash-bundle", "", "force use of a specific flasher OCI bundle")
	f.BoolVar(&o.consoleDebug, "console-debug", false, "print the board's console while flashing")

	shell := func(use, short string, busybox bool) *cobra.Command {
		var debug bool
		var timeout time.Duration
		cmd := &cobra.Command{
			Use:   use,
			Short: short + " (press Ctrl-B three times to leave)",
			Long: short + ". On a terminal the shell is interactive (press Ctrl-B three times to leave). " +
				"With piped input it runs the lines one at a time, each after the shell prompts again, " +
				"prints what the shell printed and exits with the last command's status.",
			Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				at := &shellAttacher{fl: fl, busybox: busybox, debug: debug, status: cmd.ErrOrStderr()}
				if term.IsTerminal(int(os.Stdin.Fd())) {
					return Interactive(cmd.Context(), at, os.Stdin, os.Stdout)
				}
				sh, err := at.open(cmd.Context())
				if err != nil {
					return err
				}
				defer sh.Close()
				return Script(cmd.Context(), sh, sh.Prompt(), os.Stdin, os.Stdout, timeout)
			},
		}
		cmd.Flags().BoolVar(&debug, "console-debug", false, "print the board's console on the way to the shell")
		cmd.Flags().DurationVar(&timeout, "command-timeout", 10*time.Minute, "with piped input: how long one line may run before the shell is given up")
		return cmd
	}
	return []*cobra.Command{
		flash,
		shell("bootloader-shell", "Start a U-Boot interactive console", false),
		shell("busybox-shell", "Start a busybox shell in the flasher", true),
	}
}

type flashFlags struct {
	partition, checksum, checksumFile, bmap, bundle string
	direct, forceHTTP, consoleDebug                 bool
}

func runFlash(ctx context.Context, fl flasher.Programmer, arg string, o flashFlags, stderr io.Writer) error {
	opts := flasher.FlashOptions{
		Partition: o.partition, Direct: o.direct, ForceExporterHTTP: o.forceHTTP,
		Bundle: o.bundle, ConsoleDebug: o.consoleDebug,
	}
	switch {
	case o.checksum != "" && o.checksumFile != "":
		return fmt.Errorf("give --os-image-checksum or --os-image-checksum-file, not both")
	case o.checksum != "":
		opts.SHA256 = o.checksum
	case o.checksumFile != "":
		sum, err := readChecksumFile(o.checksumFile)
		if err != nil {
			return err
		}
		opts.SHA256 = sum
	}
	var img flasher.Image
	bmapPath := o.bmap
	switch {
	case strings.HasPrefix(arg, "oci://"):
		img.OCIRef = strings.TrimPrefix(arg, "oci://")
	case strings.HasPrefix(arg, "http://"), strings.HasPrefix(arg, "https://"):
		img.URL = arg
	default:
		fh, err := os.Open(arg)
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		defer fh.Close()
		fi, err := fh.Stat()
		if err != nil {
			return fmt.Errorf("image: %w", err)
		}
		if fi.IsDir() {
			return fmt.Errorf("image %s is a directory", arg)
		}
		img.Reader, img.Name = fh, filepath.Base(arg)
		if fi.Mode().IsRegular() {
			img.Size = fi.Size()
		}
		if bmapPath == "" {
			bmapPath = besideBmap(arg)
			if bmapPath == "" {
				fmt.Fprintf(stderr, "no block map beside %s (looked for %s): writing the whole image\n", arg, strings.Join(bmapNames(arg), ", "))
			}
		}
	}
	if bmapPath != "" {
		b, err := os.ReadFile(bmapPath)
		if err != nil {
			return fmt.Errorf("bmap: %w", err)
		}
		opts.Bmap = b
		fmt.Fprintf(stderr, "using block map %s\n", bmapPath)
	}
	p := newProgress(stderr)
	if o.consoleDebug {
		p.console = stderr
	}
	res, err := fl.Flash(ctx, img, opts, p.event)
	p.finish()
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, resultLine(imageLabel(arg), res))
	return nil
}

// resultLine sums a flash up: the write and the read-back each with its
// time and rate, then the whole.
func resultLine(label string, res flasher.Result) string {
	step := func(n int64, d time.Duration) string {
		if d <= 0 {
			return "-"
		}
		return fmt.Sprintf("%s (%.1f MB/s)", d.Round(100*time.Millisecond), float64(n)/d.Seconds()/1e6)
	}
	bm := ""
	if res.Bmap != "" {
		bm = ", with a block map"
	}
	return fmt.Sprintf("flashed %s to %s: %d bytes written in %s%s, %d verified in %s; %s in all, sha256 %s; board powered off",
		label, res.Target, res.Written, step(res.Written, res.Write), bm, res.Verified, step(res.Verified, res.Verify),
		res.Duration.Round(100*time.Millisecond), res.SHA256)
}

func imageLabel(arg string) string {
	if strings.Contains(arg, "://") {
		return arg
	}
	return filepath.Base(arg)
}

// readChecksumFile takes the first word of a sha256sum-style file.
func readChecksumFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("checksum file: %w", err)
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return "", fmt.Errorf("checksum file %s is empty", path)
	}
	return fields[0], nil
}

// besideBmap finds IMAGE.bmap next to the image, with or without the
// compression suffix ("os.img.xz" → "os.img.xz.bmap" or "os.img.bmap").
func besideBmap(img string) string {
	for _, c := range bmapNames(img) {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			return c
		}
	}
	return ""
}

// bmapNames are where besideBmap looks.
func bmapNames(img string) []string {
	cands := []string{img + ".bmap"}
	for _, ext := range []string{".xz", ".gz", ".zst", ".zstd", ".bz2"} {
		if base, ok := strings.CutSuffix(img, ext); ok {
			cands = append(cands, base+".bmap")
		}
	}
	return cands
}

// progress prints flash events: a bar redrawn in place on a terminal,
// a line every few seconds otherwise.
type progress struct {
	w       io.Writer
	tty     bool
	console io.Writer
	phase   string
	// ticked is the phase of the last progress line printed.
	ticked string
	last   time.Time
	drawn  bool
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	return p
}

func (p *progress) event(e flasher.Event) {
	if e.Console != nil {
		if p.console != nil {
			p.clear()
			_, _ = p.console.Write(e.Console)
		}
		return
	}
	if e.Message != "" {
		p.clear()
		fmt.Fprintf(p.w, "%s: %s\n", e.Phase, e.Message)
		p.phase = e.Phase
		return
	}
	if e.Phase != flasher.PhaseWrite && e.Phase != flasher.PhaseVerify {
		return
	}
	line := progressLine(e)
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\x1b[K", line)
		p.drawn = true
		return
	}
	// The first tick of a step shows at once, then one every 5 s.
	if e.Phase != p.ticked || time.Since(p.last) >= 5*time.Second {
		p.last, p.ticked = time.Now(), e.Phase
		fmt.Fprintln(p.w, line)
	}
}

func progressLine(e flasher.Event) string {
	mb := float64(e.Image) / 1e6
	what := "written"
	if e.Phase == flasher.PhaseVerify {
		what = "read back"
	}
	if e.Total > 0 {
		pct := 100 * float64(e.Done) / float64(e.Total)
		pct = min(pct, 100)
		const width = 30
		fill := int(pct / 100 * width)
		return fmt.Sprintf("%s [%s%s] %5.1f%%  %.1f MB %s  %.1f MB/s", e.Phase, strings.Repeat("=", fill), strings.Repeat(" ", width-fill), pct, mb, what, e.MBps)
	}
	return fmt.Sprintf("%s %.1f MB %s  %.1f MB/s", e.Phase, mb, what, e.MBps)
}

func (p *progress) clear() {
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
}

func (p *progress) finish() { p.clear() }

// shellAttacher lets Interactive drive a flasher shell like a console.
type shellAttacher struct {
	fl      flasher.Programmer
	busybox bool
	debug   bool
	status  io.Writer
}

func (s *shellAttacher) Attach(ctx context.Context, _ console.AttachOptions) (io.ReadWriteCloser, error) {
	return s.open(ctx)
}

func (s *shellAttacher) open(ctx context.Context) (flasher.Shell, error) {
	events := func(e flasher.Event) {
		if e.Console != nil {
			_, _ = s.status.Write(e.Console)
		} else if e.Message != "" {
			fmt.Fprintln(s.status, e.Message)
		}
	}
	opts := flasher.ShellOptions{ConsoleDebug: s.debug}
	if s.busybox {
		return s.fl.BusyboxShell(ctx, opts, events)
	}
	return s.fl.BootloaderShell(ctx, opts, events)
}

func (s *shellAttacher) Scrollback(context.Context) ([]byte, error) { return nil, nil }
