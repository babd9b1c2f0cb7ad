package flasher

import (
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/pogolab/pogo/api/errdefs"
	pb "github.com/pogolab/pogo/api/pogo/v1"
	"github.com/pogolab/pogo/drivers"
)

// ChunkSize is the size of upload chunks.
const ChunkSize = 256 << 10

func init() {
	drivers.Capability[Programmer]("flasher", func(s grpc.ServiceRegistrar, r drivers.Resolver) {
		pb.RegisterFlasherServer(s, &server{r: r})
	})
}

type server struct {
	pb.UnimplementedFlasherServer
	r drivers.Resolver
}

// uploadChunk is the image bytes an upload message carries.
func uploadChunk(m *pb.FlashRequest) ([]byte, error) {
	if m.GetHeader() != nil {
		return nil, errdefs.Invalidf("flash: a second header arrived in the middle of the upload")
	}
	return m.GetChunk(), nil
}

func (s *server) Flash(stream pb.Flasher_FlashServer) error {
	ctx := stream.Context()
	f, err := drivers.ResolveAs[Programmer](ctx, s.r, "flasher")
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return errdefs.ToGRPC(errdefs.Invalidf("flash: the first message must carry the header"))
	}
	img := Image{Size: h.GetSize(), Name: h.GetName()}
	switch src := h.GetSource().(type) {
	case *pb.FlashHeader_Upload:
		img.Reader = drivers.NewChunkReader(stream.Recv, uploadChunk, -1)
	case *pb.FlashHeader_Url:
		img.URL = src.Url
	case *pb.FlashHeader_OciRef:
		img.OCIRef = src.OciRef
	default:
		return errdefs.ToGRPC(errdefs.Invalidf("flash: the header names no image source"))
	}
	opts := FlashOptions{
		Partition: h.GetPartition(), SHA256: h.GetSha256(), Bmap: h.GetBmap(), Direct: h.GetDirect(),
		ForceExporterHTTP: h.GetForceExporterHttp(), Bundle: h.GetForceFlashBundle(), ConsoleDebug: h.GetConsoleDebug(),
	}
	var mu sync.Mutex
	var sendErr error
	send := func(m *pb.FlashEvent) {
		mu.Lock()
		defer mu.Unlock()
		if sendErr == nil {
			sendErr = stream.Send(m)
		}
	}
	res, err := f.Flash(ctx, img, opts, func(e Event) {
		if e.Console != nil {
			send(&pb.FlashEvent{Msg: &pb.FlashEvent_Console{Console: e.Console}})
			return
		}
		send(&pb.FlashEvent{Msg: &pb.FlashEvent_Progress{Progress: &pb.FlashProgress{
			Phase: e.Phase, Message: e.Message, Done: e.Done, Total: e.Total, Mbps: e.MBps, Image: e.Image,
		}}})
	})
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	send(&pb.FlashEvent{Msg: &pb.FlashEvent_Result{Result: &pb.FlashResult{
		Sha256: res.SHA256, Written: res.Written, Duration: durationpb.New(res.Duration),
		Target: res.Target, ImageSize: res.ImageSize, Write: durationpb.New(res.Write),
		Verify: durationpb.New(res.Verify), Verified: res.Verified, Bmap: res.Bmap,
	}}})
	return sendErr
}

func (s *server) BootloaderShell(stream pb.Flasher_BootloaderShellServer) error {
	return s.shell(stream, false)
}

func (s *server) BusyboxShell(stream pb.Flasher_BusyboxShellServer) error {
	return s.shell(stream, true)
}

// shellStream is what both shell RPCs' streams are.
type shellStream interface {
	Send(*pb.ShellOutput) error
	Recv() (*pb.ShellInput, error)
	grpc.ServerStream
}

func (s *server) shell(stream shellStream, busybox bool) error {
	ctx := stream.Context()
	f, err := drivers.ResolveAs[Programmer](ctx, s.r, "flasher")
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return errdefs.ToGRPC(errdefs.Invalidf("shell: the first message must open the shell"))
	}
	var mu sync.Mutex
	send := func(m *pb.ShellOutput) error {
		mu.Lock()
		defer mu.Unlock()
		return stream.Send(m)
	}
	opts := ShellOptions{Bundle: open.GetForceFlashBundle(), ConsoleDebug: open.GetConsoleDebug()}
	events := func(e Event) {
		if e.Console != nil {
			_ = send(&pb.ShellOutput{Msg: &pb.ShellOutput_Data{Data: e.Console}})
		} else if e.Message != "" {
			_ = send(&pb.ShellOutput{Msg: &pb.ShellOutput_Status{Status: e.Message}})
		}
	}
	open2 := f.BootloaderShell
	if busybox {
		open2 = f.BusyboxShell
	}
	sh, err := open2(ctx, opts, events)
	if err != nil {
		return errdefs.ToGRPC(err)
	}
	defer sh.Close()
	if err := send(&pb.ShellOutput{Msg: &pb.ShellOutput_Prompt{Prompt: sh.Prompt()}}); err != nil {
		return err
	}
	if err := send(&pb.ShellOutput{Msg: &pb.ShellOutput_Ready{Ready: true}}); err != nil {
		return err
	}
	inErr := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				inErr <- err
				sh.Close()
				return
			}
			if d := m.GetData(); len(d) > 0 {
				if _, err := sh.Write(d); err != nil {
					inErr <- errdefs.ToGRPC(err)
					sh.Close()
					return
				}
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := sh.Read(buf)
		if n > 0 {
			if serr := send(&pb.ShellOutput{Msg: &pb.ShellOutput_Data{Data: buf[:n]}}); serr != nil {
				return serr
			}
		}
		if err != nil {
			select {
			case e := <-inErr:
				return e
			default:
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
				return nil
			}
			return errdefs.ToGRPC(err)
		}
	}
}
