package blob

import (
	"bytes"
	"errors"
	"testing"
)

func TestCRC16Vectors(t *testing.T) {
	for in, want := range map[string]uint16{"": 0x1D0F, "A": 0x9479, "123456789": 0xE5CC} {
		if got := CRC16([]byte(in)); got != want {
			t.Errorf("CRC16(%q) = %#04x, want %#04x", in, got, want)
		}
	}
}

func TestEncodeRequestBytes(t *testing.T) {
	if got, want := EncodeRequest(GetCount, nil), []byte{0xcf, 0xc2, 0x00, 0x00}; !bytes.Equal(got, want) {
		t.Errorf("get count = % x, want % x", got, want)
	}
	got := EncodeRequest(Stat, []byte("A"))
	if want := []byte{0xcf, 0xc2, 0x00, 0x08, 0x79, 0x94, 'A'}; !bytes.Equal(got, want) {
		t.Errorf("stat = % x, want % x", got, want)
	}
}

func TestDecodeRequest(t *testing.T) {
	openBody := append([]byte{0x02, 0x01}, "/flash/image\x00"...)
	good := EncodeRequest(Open, openBody)
	badCRC := bytes.Clone(good)
	badCRC[5] ^= 1
	cases := []struct {
		name string
		in   []byte
		cc   byte
		sub  Subcommand
		body []byte
	}{
		{"get count", EncodeRequest(GetCount, nil), 0, GetCount, nil},
		{"open", good, 0, Open, openBody},
		{"empty", nil, CCReqDataLen, 0, nil},
		{"short oen", []byte{0xcf, 0xc2}, CCReqDataLen, 0, nil},
		{"wrong oen", []byte{0x01, 0x02, 0x03, 0x00}, CCInvalidCommand, 0, nil},
		{"oen only", []byte{0xcf, 0xc2, 0x00}, CCReqDataLen, 0, nil},
		{"crc without body", []byte{0xcf, 0xc2, 0x00, 0x08, 0x01, 0x02}, CCReqDataLen, 0, nil},
		{"bad crc", badCRC, CCUnspecifiedError, 0, nil},
		{"open too short", EncodeRequest(Open, []byte{0x02, 0x01, 'x'}), CCReqDataLen, 0, nil},
		{"enumerate missing index", EncodeRequest(Enumerate, nil), CCReqDataLen, 0, nil},
		{"read too short", EncodeRequest(Read, []byte{1, 2, 3}), CCReqDataLen, 0, nil},
		{"unknown subcommand", []byte{0xcf, 0xc2, 0x00, 0x0b}, CCInvalidField, 0, nil},
		{"unknown with body", EncodeRequest(Subcommand(0x40), []byte{1}), CCInvalidField, 0, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := DecodeRequest(tc.in)
			if tc.cc == 0 {
				if err != nil || f.Sub != tc.sub || !bytes.Equal(f.Body, tc.body) {
					t.Fatalf("got %+v, %v", f, err)
				}
				return
			}
			var de *DecodeError
			if !errors.As(err, &de) || de.CC != tc.cc {
				t.Fatalf("got %v, want cc %#02x", err, tc.cc)
			}
		})
	}
}

func TestResponseAndMetaRoundTrip(t *testing.T) {
	m := Meta{State: StateOpenWrite | StateCommitted, Size: 1234, Metadata: []byte{byte(StatusSuccess)}}
	body, err := DecodeResponse(EncodeResponse(m.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMeta(body)
	if err != nil || got.State != m.State || got.Size != m.Size || !bytes.Equal(got.Metadata, m.Metadata) {
		t.Fatalf("got %+v, %v", got, err)
	}
	if b, err := DecodeResponse([]byte{0xcf, 0xc2, 0x00}); err != nil || b != nil {
		t.Errorf("empty reply: %v %v", b, err)
	}
	corrupt := EncodeResponse([]byte{1, 2, 3})
	corrupt[len(corrupt)-1] ^= 1
	if _, err := DecodeResponse(corrupt); err == nil {
		t.Error("corrupt reply accepted")
	}
	if _, ok := CString([]byte("a\x00b\x00")); ok {
		t.Error("embedded NUL accepted")
	}
}

// FuzzDecodeRequest checks the decoder never panics and that whatever it
// accepts re-encodes to the same bytes.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(EncodeRequest(GetCount, nil))
	f.Add(EncodeRequest(Open, append([]byte{0x02, 0x01}, "/flash/image\x00"...)))
	f.Add(EncodeRequest(Write, []byte{1, 0, 0, 0, 0, 0, 0xaa}))
	f.Add([]byte{0xcf, 0xc2, 0x00, 0x08, 0xff})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := DecodeRequest(data)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || de.CC == 0 {
				t.Fatalf("error without completion code: %v", err)
			}
			return
		}
		if got := EncodeRequest(fr.Sub, fr.Body); !bytes.Equal(got, data) {
			t.Fatalf("re-encoded % x, input % x", got, data)
		}
		_, _ = DecodeMeta(fr.Body)
		_, _ = CString(fr.Body)
	})
}
