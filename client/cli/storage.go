package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/pogolab/pogo/client"
	"github.com/pogolab/pogo/drivers/storage"
)

func init() { RegisterVerbs("storage", storageVerbs) }

func storageVerbs(c *client.Client, path string) []*cobra.Command {
	d := storage.NewClient(c.Conn(), path)
	var keepRest bool
	write := &cobra.Command{
		Use:   "write FILE",
		Short: "Write an image onto the disk from offset 0 (board powered off)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			opts := storage.WriteOptions{Truncate: !keepRest}
			if st.Mode().IsRegular() {
				opts.Size = st.Size()
			}
			n, err := d.Write(cmd.Context(), f, opts)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %d bytes\n", n)
			return nil
		},
	}
	write.Flags().BoolVar(&keepRest, "keep-rest", false, "keep the disk's old contents beyond the image instead of zeroing them")

	var offset, length int64
	read := &cobra.Command{
		Use:   "read OUT",
		Short: "Copy the disk (or --offset/--length of it) into OUT, - for stdout (board powered off)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) (err error) {
			var w io.Writer = cmd.OutOrStdout()
			if args[0] != "-" {
				f, err := os.Create(args[0])
				if err != nil {
					return err
				}
				defer func() {
					if cerr := f.Close(); err == nil {
						err = cerr
					}
				}()
				w = f
			}
			n, err := d.Read(cmd.Context(), w, offset, length)
			if err != nil {
				return err
			}
			if args[0] != "-" {
				fmt.Fprintf(cmd.ErrOrStderr(), "read %d bytes\n", n)
			}
			return nil
		},
	}
	read.Flags().Int64Var(&offset, "offset", 0, "first byte to read")
	read.Flags().Int64Var(&length, "length", 0, "bytes to read (default: to the end)")

	return []*cobra.Command{
		write,
		read,
		{
			Use: "info", Short: "Print the disk's size, path and whether it is busy", Args: cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				in, err := d.Info(cmd.Context())
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "size %d\nallocated %d\npath %s\nbusy %t\n", in.Size, in.Allocated, in.Path, in.Busy)
				return nil
			},
		},
	}
}
