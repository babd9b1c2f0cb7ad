package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers/console"
)

func init() { RegisterVerbs("console", consoleVerbs) }

// escapeKey pressed escapeCount times in a row leaves an interactive
// console (Ctrl-B, as in Jumpstarter).
const (
	escapeKey   = 0x02
	escapeCount = 3
)

func consoleVerbs(c *client.Client, path string) []*cobra.Command {
	con := c.Console(path)
	var linger time.Duration
	var follow, raw bool
	pipe := &cobra.Command{
		Use:   "pipe",
		Short: "Copy stdin to the console and its live output to stdout (log replays)",
		Long: `Copy stdin to the console and the console's live output to stdout, raw:
only output from the moment pipe attaches is shown. For what the board
printed before, use log (the scrollback; log -f to follow it).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return Pipe(cmd.Context(), con, os.Stdin, cmd.OutOrStdout(), linger)
		},
	}
	pipe.Flags().DurationVar(&linger, "linger", time.Second, "keep printing output this long after stdin ends")
	logCmd := &cobra.Command{
		Use:   "log",
		Short: "Print the console's scrollback (and follow it with -f)",
		Long: `Print the console's scrollback (and follow it with -f). On a terminal the
sequences with which the board asked its terminal something (cursor
position ESC[6n, device attributes, OSC and DCS queries) are shown as
^[[6n rather than sent, so your terminal does not answer them into your
shell; a pipe, or --raw, gets the bytes as they are.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			out := cmd.OutOrStdout()
			if f, ok := out.(*os.File); ok && !raw && term.IsTerminal(int(f.Fd())) {
				qf := &queryFilter{w: out}
				defer func() {
					if ferr := qf.Flush(); err == nil {
						err = ferr
					}
				}()
				out = qf
			}
			if !follow {
				b, err := con.Scrollback(cmd.Context())
				if err != nil {
					return err
				}
				_, err = out.Write(b)
				return err
			}
			a, err := con.Attach(cmd.Context(), console.AttachOptions{Replay: true})
			if err != nil {
				return err
			}
			defer a.Close()
			_, err = io.Copy(out, a)
			return err
		},
	}
	logCmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	logCmd.Flags().BoolVar(&raw, "raw", false, "write the bytes as they are, terminal queries included, also to a terminal")
	return []*cobra.Command{
		{
			Use:   "console",
			Short: "Interactive console (press Ctrl-B three times to leave)",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return Interactive(cmd.Context(), con, os.Stdin, os.Stdout)
			},
		},
		pipe,
		logCmd,
	}
}

// Interactive attaches to con as writer with the terminal in raw mode
// until Ctrl-B is pressed three times in a row or the console closes.
func Interactive(ctx context.Context, con console.Attacher, in *os.File, out io.Writer) error {
	a, err := con.Attach(ctx, console.AttachOptions{Write: true, Replay: true})
	if err != nil {
		return err
	}
	defer a.Close()
	if term.IsTerminal(int(in.Fd())) {
		st, err := term.MakeRaw(int(in.Fd()))
		if err != nil {
			return fmt.Errorf("raw terminal: %w", err)
		}
		defer term.Restore(int(in.Fd()), st)
		fmt.Fprint(out, "[attached; press Ctrl-B three times to leave]\r\n")
	}
	outDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, a)
		outDone <- err
	}()
	inDone := make(chan error, 1)
	go func() { inDone <- copyUntilEscape(a, in) }()
	select {
	case err := <-inDone:
		if errors.Is(err, errEscaped) {
			fmt.Fprint(out, "\r\n[detached]\r\n")
			return nil
		}
		return err
	case err := <-outDone:
		return err
	}
}

var errEscaped = errors.New("escaped")

func copyUntilEscape(w io.Writer, r io.Reader) error {
	buf := make([]byte, 4096)
	out := make([]byte, 0, 4096)
	run := 0
	for {
		n, err := r.Read(buf)
		out = out[:0]
		for _, b := range buf[:n] {
			if b == escapeKey {
				run++
				if run == escapeCount {
					return errEscaped
				}
				continue
			}
			// Escape keys that did not complete the sequence are passed on.
			for ; run > 0; run-- {
				out = append(out, escapeKey)
			}
			out = append(out, b)
		}
		if len(out) > 0 {
			if _, werr := w.Write(out); werr != nil {
				return werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// Pipe copies in to the console and the console to out; after in ends it
// keeps copying output for linger.
func Pipe(ctx context.Context, con console.Attacher, in io.Reader, out io.Writer, linger time.Duration) error {
	a, err := con.Attach(ctx, console.AttachOptions{Write: true})
	if err != nil {
		return err
	}
	defer a.Close()
	outDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, a)
		outDone <- err
	}()
	if _, err := io.Copy(a, in); err != nil {
		return err
	}
	select {
	case err := <-outDone:
		return err
	case <-time.After(linger):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
