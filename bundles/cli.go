package bundles

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// Command is `jmp bundle`: push, pull and inspect flasher bundles.
func Command() *cobra.Command {
	root := &cobra.Command{
		Use:   "bundle",
		Short: "Push, pull and inspect flasher bundles (OCI artifacts)",
		Long: `A flasher bundle is a directory with manifest.yaml (Jumpstarter's
FlashBundleManifest) and the files it names, stored in a registry as an OCI
artifact of type ` + ArtifactType + `.

REF is a registry reference (HOST/REPO[:TAG|@DIGEST], plain HTTP for
localhost and loopback addresses, credentials from the docker config file),
` + LayoutPrefix + `PATH[:TAG|@DIGEST] for a local OCI layout, or a directory.`,
	}
	root.AddCommand(pushCommand(), pullCommand(), inspectCommand())
	return root
}

func pushCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "push DIR REF",
		Short: "Check the bundle in DIR and push it to REF",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			digest, err := Push(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pushed %s\ndigest %s\n", args[1], digest)
			return nil
		},
	}
}

func pullCommand() *cobra.Command {
	var cacheDir string
	cmd := &cobra.Command{
		Use:   "pull REF",
		Short: "Fetch the bundle at REF into the cache and print where its files are",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := Pull(cmd.Context(), args[0], cacheDir)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "bundle  %s\n", b.Manifest.Name)
			if b.Digest != "" {
				fmt.Fprintf(w, "digest  %s\nfetched %d bytes\n", b.Digest, b.Fetched)
			}
			fmt.Fprintf(w, "dir     %s\n", b.Dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&cacheDir, "cache-dir", DefaultCacheDir(), "where pulled bundles are kept")
	return cmd
}

func inspectCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect REF",
		Short: "Show a bundle's manifest and files without downloading them",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			info, err := Inspect(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			printInfo(cmd.OutOrStdout(), info)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

func printInfo(out io.Writer, info *Info) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	m, s := info.Manifest, &info.Manifest.Spec
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "%s\t%s\n", k, v)
		}
	}
	row("name", m.Name)
	row("digest", info.Digest)
	row("artifact type", info.ArtifactType)
	row("manufacturer", s.Manufacturer)
	row("link", s.Link)
	row("bootcmd", s.Bootcmd)
	row("kernel", s.Kernel.File+" @ "+s.Kernel.Address)
	if s.Initram != nil {
		row("initram", s.Initram.File+" @ "+s.Initram.Address)
	}
	if s.DTB != nil {
		var vs []string
		for _, name := range slices.Sorted(maps.Keys(s.DTB.Variants)) {
			v := s.DTB.Variants[name]
			d := name + "=" + v.File
			if v.Bootcmd != "" {
				d += " (" + v.Bootcmd + ")"
			}
			vs = append(vs, d)
		}
		row("dtb", fmt.Sprintf("default %s @ %s: %s", s.DTB.Default, s.DTB.Address, strings.Join(vs, ", ")))
	}
	var ts []string
	for _, name := range s.TargetNames() {
		t := name + "=" + s.Targets[name].String()
		if name == s.DefaultTarget {
			t += " (default)"
		}
		ts = append(ts, t)
	}
	row("targets", strings.Join(ts, ", "))
	login := s.Login.Type + ", prompt " + fmt.Sprintf("%q", s.Login.Prompt)
	if s.Login.Username != "" {
		login += ", user " + s.Login.Username
	}
	row("login", login)
	for i, c := range s.PreflashCommands {
		row(fmt.Sprintf("preflash[%d]", i), c)
	}
	fmt.Fprintln(w, "files:")
	for _, f := range info.Files {
		fmt.Fprintf(w, "  %s\t%d\t%s\n", f.Name, f.Size, f.Digest)
	}
}
