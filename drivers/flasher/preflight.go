package flasher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/pogolab/pogo/api/errdefs"
	"github.com/pogolab/pogo/drivers/flasher/image"
)

// maxBmapSize bounds a block map fetched from beside a URL or from an OCI
// artifact: bmaptool's XML for a 1 TB image is a few MB.
const maxBmapSize = 64 << 20

// preflight checks everything about the image that can fail without the
// board, before it is powered: that a URL answers (HEAD) and an OCI
// reference resolves (its manifest), and it finds the block map beside a
// URL or in the artifact. It returns the source the write reads; an OCI
// layer keeps downloading in the background while the board boots.
func (d *Driver) preflight(ctx context.Context, p *plan, emit func(Event)) (source, error) {
	img := p.img
	switch {
	case img.Reader != nil:
		return newSpool(d.cfg.CacheDir, img.Reader, img.Size)
	case img.URL != "":
		// A server that answers answers at once; with --direct the
		// exporter may not reach it at all, so it waits less.
		hctx, cancel := context.WithTimeout(ctx, headTimeout(p.direct))
		err := headURL(hctx, img.URL)
		cancel()
		if err != nil {
			if p.direct && !errors.Is(err, errdefs.ErrNotFound) {
				// The board may reach what the exporter cannot.
				d.log.Warn("flasher: the exporter cannot check the image URL; the board fetches it itself", "url", img.URL, "err", err)
			} else {
				return nil, &stepErr{PhaseImage, err}
			}
		}
		if p.direct {
			if p.bmap == nil {
				emit(Event{Phase: PhaseImage, Message: "no block map used: the board fetches the URL itself (--direct)"})
			}
			return nil, nil
		}
		if p.bmap == nil {
			bm, name, err := findURLBmap(ctx, img.URL)
			if err != nil {
				return nil, &stepErr{PhaseImage, err}
			}
			p.bmap, p.bmapName = bm, name
		}
		p.announceBmap(emit)
		return urlSource{url: img.URL}, nil
	case img.OCIRef != "":
		emit(Event{Phase: PhaseImage, Message: "resolving oci://" + img.OCIRef})
		art, err := resolveImage(ctx, img.OCIRef)
		if err != nil {
			return nil, &stepErr{PhaseImage, err}
		}
		if p.bmap == nil && art.bmap != nil {
			data, err := art.fetchBmap(ctx)
			if err != nil {
				return nil, &stepErr{PhaseImage, err}
			}
			bm, err := image.ParseBmap("oci://"+img.OCIRef+" bmap layer "+art.bmap.Digest.String(), data)
			if err != nil {
				return nil, &stepErr{PhaseImage, errdefs.Invalidf("%v", err)}
			}
			p.bmap, p.bmapName = bm, "oci://"+img.OCIRef+" layer "+art.bmap.Digest.String()
		}
		p.announceBmap(emit)
		return pullInBackground(ctx, art, d.cfg.CacheDir, d.log), nil
	}
	return nil, nil
}

// announceBmap says which block map the flash uses, or that there is none.
func (p *plan) announceBmap(emit func(Event)) {
	switch {
	case p.bmap != nil && p.bmapName != "":
		emit(Event{Phase: PhaseImage, Message: "using block map " + p.bmapName})
	case p.bmap != nil:
		emit(Event{Phase: PhaseImage, Message: "using the block map sent with the request"})
	case p.img.URL != "":
		emit(Event{Phase: PhaseImage, Message: "no block map beside the URL (looked for " + strings.Join(bmapCandidates(p.img.URL), ", ") + "): writing the whole image"})
	case p.img.OCIRef != "":
		emit(Event{Phase: PhaseImage, Message: "no block map layer in oci://" + p.img.OCIRef + ": writing the whole image"})
	}
}

func headTimeout(direct bool) time.Duration {
	if direct {
		return 3 * time.Second
	}
	return 15 * time.Second
}

// headURL asks the server whether the image is there, without fetching
// it: HEAD, and when that is refused a one-byte GET, which is what
// decides (servers that do not do HEAD, URLs signed for GET only).
func headURL(ctx context.Context, raw string) error {
	for _, m := range []string{http.MethodHead, http.MethodGet} {
		var h http.Header
		if m == http.MethodGet {
			h = http.Header{"Range": {"bytes=0-0"}}
		}
		resp, err := request(ctx, m, raw, h)
		if err != nil {
			return fmt.Errorf("image URL %s: %w", raw, err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent {
			return nil
		}
		if m == http.MethodGet {
			return &statusError{url: raw, status: resp.Status, code: resp.StatusCode}
		}
	}
	panic("unreachable")
}

// statusError is an image URL's server refusing it; 404 and 410 are
// errdefs.ErrNotFound.
type statusError struct {
	url, status string
	code        int
}

func (e *statusError) Error() string { return "image URL " + e.url + ": " + e.status }

func (e *statusError) Unwrap() error {
	if e.code == http.StatusNotFound || e.code == http.StatusGone {
		return errdefs.ErrNotFound
	}
	return nil
}

func request(ctx context.Context, method, raw string, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, raw, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	return http.DefaultClient.Do(req)
}

// compressionSuffixes are the image suffixes a bmap's name leaves out.
var compressionSuffixes = []string{".xz", ".gz", ".zst", ".zstd", ".bz2"}

// bmapCandidates are where a URL's block map may be, in the order tried:
// URL.bmap, then the name without its compression suffix plus .bmap (as
// bmaptool looks). The query is dropped: it signs the image, not the map.
func bmapCandidates(raw string) []string {
	u, err := url.Parse(raw)
	if err != nil {
		return nil
	}
	u.RawQuery, u.Fragment = "", ""
	p := u.Path
	u.Path = p + ".bmap"
	out := []string{u.String()}
	ext := path.Ext(p)
	for _, s := range compressionSuffixes {
		if strings.EqualFold(ext, s) {
			u.Path = strings.TrimSuffix(p, ext) + ".bmap"
			out = append(out, u.String())
		}
	}
	return out
}

// findURLBmap fetches the first block map found beside raw; none found is
// not an error, a block map that is there but broken is.
func findURLBmap(ctx context.Context, raw string) (*image.Bmap, string, error) {
	for _, c := range bmapCandidates(raw) {
		resp, err := request(ctx, http.MethodGet, c, nil)
		if err != nil {
			return nil, "", fmt.Errorf("block map %s: %w", c, err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			continue
		}
		data, err := io.ReadAll(io.LimitReader(resp.Body, maxBmapSize+1))
		resp.Body.Close()
		if err != nil {
			return nil, "", fmt.Errorf("block map %s: %w", c, err)
		}
		if len(data) > maxBmapSize {
			return nil, "", errdefs.Invalidf("block map %s: larger than %d MB", c, maxBmapSize>>20)
		}
		bm, err := image.ParseBmap(c, data)
		if err != nil {
			return nil, "", errdefs.Invalidf("%v", err)
		}
		return bm, c, nil
	}
	return nil, "", nil
}
