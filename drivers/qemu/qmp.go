package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// qmp is a client of QEMU's machine protocol: JSON objects, one per line,
// commands answered in order with events interleaved.
type qmp struct {
	conn net.Conn
	r    *bufio.Reader

	mu sync.Mutex
	id int
}

// qmpReply is one message from QEMU: a command's return or error, an
// event, or the greeting.
type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string          `json:"event"`
	QMP   json.RawMessage `json:"QMP"`
	ID    *int            `json:"id"`
}

// maxQMPLine bounds one message; QEMU's replies to our commands are small.
const maxQMPLine = 1 << 20

// decodeReply parses one line from QEMU.
func decodeReply(line []byte) (qmpReply, error) {
	var r qmpReply
	if len(line) > maxQMPLine {
		return r, fmt.Errorf("qmp: message of %d bytes is too long", len(line))
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return r, fmt.Errorf("qmp: bad message %.80q: %w", line, err)
	}
	if r.Return == nil && r.Error == nil && r.Event == "" && r.QMP == nil {
		return r, fmt.Errorf("qmp: message %.80q is neither a reply, an event nor a greeting", line)
	}
	return r, nil
}

// dialQMP connects to the socket, reads the greeting and leaves
// negotiation mode.
func dialQMP(ctx context.Context, path string) (*qmp, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	q := &qmp{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}
	if err := q.deadline(ctx); err != nil {
		conn.Close()
		return nil, err
	}
	m, err := q.next()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	if m.QMP == nil {
		conn.Close()
		return nil, errors.New("qmp: first message is not the greeting")
	}
	if err := q.do(ctx, "qmp_capabilities", nil, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

func (q *qmp) deadline(ctx context.Context) error {
	dl, ok := ctx.Deadline()
	if !ok {
		dl = time.Now().Add(10 * time.Second)
	}
	return q.conn.SetDeadline(dl)
}

func (q *qmp) next() (qmpReply, error) {
	line, err := q.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return qmpReply{}, errors.New("qmp: message longer than 64 KiB")
	}
	if err != nil {
		return qmpReply{}, err
	}
	return decodeReply(line)
}

// do runs a command and decodes its return into out (when not nil).
func (q *qmp) do(ctx context.Context, cmd string, args, out any) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.deadline(ctx); err != nil {
		return err
	}
	q.id++
	id := q.id
	req := map[string]any{"execute": cmd, "id": id}
	if args != nil {
		req["arguments"] = args
	}
	b, _ := json.Marshal(req)
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	for {
		m, err := q.next()
		if err != nil {
			return fmt.Errorf("qmp %s: %w", cmd, err)
		}
		if m.Event != "" || m.ID == nil || *m.ID != id {
			continue
		}
		if m.Error != nil {
			return fmt.Errorf("qmp %s: %s: %s", cmd, m.Error.Class, m.Error.Desc)
		}
		if out != nil {
			if err := json.Unmarshal(m.Return, out); err != nil {
				return fmt.Errorf("qmp %s: decode reply: %w", cmd, err)
			}
		}
		return nil
	}
}

func (q *qmp) Close() error { return q.conn.Close() }

// qmpStatus is query-status's reply.
type qmpStatus struct {
	Running bool   `json:"running"`
	Status  string `json:"status"`
}
