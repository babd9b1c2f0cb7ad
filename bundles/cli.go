package bundles

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// Command is `jmp bundle`: push, pull and inspect flasher bundles.
func Command() *cobra.Command {
	root := &cobra.Command{
		Use:   "bundle",
		Short: "Push, pull, inspect and cache flasher bundles (OCI artifacts)",
		Long: `A flasher bundle is a directory with manifest.yaml (Jumpstarter's
FlashBundleManifest) and the files it names, stored in a registry as an OCI
artifact of type ` + ArtifactType + `.

REF is a registry reference (HOST/REPO[:TAG|@DIGEST], plain HTTP for
localhost and loopback addresses, credentials from the docker config file),
` + LayoutPrefix + `PATH[:TAG|@DIGEST] for a local OCI layout, or a directory.`,
	}
	root.AddCommand(pushCommand(), pullCommand(), inspectCommand(), lsCommand(), pruneCommand())
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

func lsCommand() *cobra.Command {
	var cacheDir string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the bundles in the cache, most recently used first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cs, err := List(cmd.Context(), cacheDir)
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "DIGEST\tNAME\tSIZE\tLAST USED\tREFS")
			for _, c := range cs {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", shortDigest(c.Digest), c.Name, humanBytes(c.Size), c.LastUsed.Format(time.DateTime), strings.Join(c.Refs, ","))
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVar(&cacheDir, "cache-dir", DefaultCacheDir(), "the bundle cache")
	return cmd
}

func pruneCommand() *cobra.Command {
	var (
		cacheDir  string
		unusedFor time.Duration
		all       bool
	)
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Remove cached bundles no pull has used for a while",
		Long: `Remove from the cache every bundle no pull has returned for --unused-for
(or every bundle, with --all), with the blobs no remaining bundle shares.
An exporter pulls its bundle when a flash begins, so a bundle in use is
never older than the flash; with --all, run it when no flash runs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			before := time.Now().Add(-unusedFor)
			if all {
				before = time.Now().Add(time.Hour)
			} else if unusedFor <= 0 {
				return fmt.Errorf("--unused-for %s: want a positive duration (or --all)", unusedFor)
			}
			removed, err := Prune(cmd.Context(), cacheDir, before)
			var freed int64
			for _, c := range removed {
				freed += c.Size
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s %s (%s, last used %s)\n", shortDigest(c.Digest), c.Name, humanBytes(c.Size), c.LastUsed.Format(time.DateTime))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "freed %s in %d bundles\n", humanBytes(freed), len(removed))
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&cacheDir, "cache-dir", DefaultCacheDir(), "the bundle cache")
	f.DurationVar(&unusedFor, "unused-for", 30*24*time.Hour, "remove bundles not used for this long")
	f.BoolVar(&all, "all", false, "remove every bundle")
	return cmd
}

func shortDigest(d string) string {
	if len(d) > len("sha256:")+12 {
		return d[:len("sha256:")+12]
	}
	return d
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
