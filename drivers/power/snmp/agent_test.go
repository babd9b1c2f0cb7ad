package snmp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gosnmp/gosnmp"
)

// agent is a real net-snmp snmpd on 127.0.0.1 whose PDU outlet tables are
// a pass script keeping state in files, one file per OID.
type agent struct {
	port  int
	dir   string
	out   *syncBuffer
	cmd   *exec.Cmd
	waitc chan struct{}
}

// Credentials the agent accepts.
const (
	roCommunity = "public"
	rwCommunity = "private"
	v3User      = "pogo"
	v3Auth      = "authpass123"
	v3Priv      = "privpass123"
	v3DESUser   = "pogodes"
	v3NoAuth    = "labuser"
)

// outletRules are the PDUs as REFERENCE §4 describes them, written out
// independently of the presets under test: a set of value on a control
// prefix writes statValue to the status prefix with the same outlet index.
// Any other value on a known prefix is wrong-value.
var outletRules = []struct {
	ctl       string
	value     int
	stat      string
	statValue int
}{
	{"1.3.6.1.4.1.318.1.1.4.4.2.1.3", 1, "1.3.6.1.4.1.318.1.1.4.4.2.1.3", 1},
	{"1.3.6.1.4.1.318.1.1.4.4.2.1.3", 2, "1.3.6.1.4.1.318.1.1.4.4.2.1.3", 2},
	{"1.3.6.1.4.1.318.1.1.4.4.2.1.3", 3, "1.3.6.1.4.1.318.1.1.4.4.2.1.3", 1},
	{"1.3.6.1.4.1.318.1.1.12.3.3.1.1.4", 1, "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4", 1},
	{"1.3.6.1.4.1.318.1.1.12.3.3.1.1.4", 2, "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4", 2},
	{"1.3.6.1.4.1.318.1.1.12.3.3.1.1.4", 3, "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4", 1},
	{"1.3.6.1.4.1.318.1.1.26.9.2.4.1.5", 1, "1.3.6.1.4.1.318.1.1.26.9.2.3.1.5", 2},
	{"1.3.6.1.4.1.318.1.1.26.9.2.4.1.5", 2, "1.3.6.1.4.1.318.1.1.26.9.2.3.1.5", 1},
	{"1.3.6.1.4.1.318.1.1.26.9.2.4.1.5", 3, "1.3.6.1.4.1.318.1.1.26.9.2.3.1.5", 2},
	{"1.3.6.1.4.1.13742.6.4.1.2.1.2.1", 1, "1.3.6.1.4.1.13742.6.4.1.2.1.3.1", 7},
	{"1.3.6.1.4.1.13742.6.4.1.2.1.2.1", 0, "1.3.6.1.4.1.13742.6.4.1.2.1.3.1", 8},
	{"1.3.6.1.4.1.13742.6.4.1.2.1.2.1", 2, "1.3.6.1.4.1.13742.6.4.1.2.1.3.1", 7},
	{"1.3.6.1.4.1.534.6.6.7.6.6.1.4.0", 1, "1.3.6.1.4.1.534.6.6.7.6.6.1.2.0", 1},
	{"1.3.6.1.4.1.534.6.6.7.6.6.1.3.0", 1, "1.3.6.1.4.1.534.6.6.7.6.6.1.2.0", 0},
	{"1.3.6.1.4.1.1718.3.2.3.1.11", 1, "1.3.6.1.4.1.1718.3.2.3.1.10", 5},
	{"1.3.6.1.4.1.1718.3.2.3.1.11", 2, "1.3.6.1.4.1.1718.3.2.3.1.10", 4},
	{"1.3.6.1.4.1.3808.1.1.3.3.3.1.1.4", 1, "1.3.6.1.4.1.3808.1.1.3.3.5.1.1.4", 1},
	{"1.3.6.1.4.1.3808.1.1.3.3.3.1.1.4", 2, "1.3.6.1.4.1.3808.1.1.3.3.5.1.1.4", 2},
	{"1.3.6.1.4.1.3808.1.1.3.3.3.1.1.4", 3, "1.3.6.1.4.1.3808.1.1.3.3.5.1.1.4", 1},
	{"1.3.6.1.2.1.105.1.1.1.3.1", 1, "1.3.6.1.2.1.105.1.1.1.3.1", 1},
	{"1.3.6.1.2.1.105.1.1.1.3.1", 2, "1.3.6.1.2.1.105.1.1.1.3.1", 2},
}

// passScript answers snmpd's pass protocol: -g OID prints OID, type and
// value when a state file exists; -s OID TYPE VALUE applies a rule or
// prints the error snmpd relays. Walks (-n) find nothing.
const passScript = `#!/bin/bash
dir=%q
case "$1" in
-g)
	f="$dir/state/${2#.}"
	if [ -f "$f" ]; then echo "$2"; echo integer; cat "$f"; fi
	;;
-s)
	oid=${2#.} type=$3 val=$4
	if [ "$type" != integer ]; then echo wrong-type; exit 0; fi
	known=0
	while read -r ctl v stat sv; do
		case "$oid" in "$ctl".*) ;; *) continue ;; esac
		known=1
		idx=${oid#"$ctl".}
		[ "$v" = "$val" ] || continue
		if [ ! -f "$dir/state/$stat.$idx" ]; then echo not-writable; exit 0; fi
		echo "$sv" > "$dir/state/$stat.$idx"
		[ "$stat" = "$ctl" ] || echo "$val" > "$dir/state/$oid"
		exit 0
	done < "$dir/rules"
	if [ $known = 1 ]; then echo wrong-value; else echo not-writable; fi
	;;
esac
exit 0
`

// passRoots are the subtrees handed to the script.
var passRoots = []string{
	".1.3.6.1.4.1.318", ".1.3.6.1.4.1.13742", ".1.3.6.1.4.1.534",
	".1.3.6.1.4.1.1718", ".1.3.6.1.4.1.3808", ".1.3.6.1.2.1.105",
}

func startAgent(t *testing.T) *agent {
	t.Helper()
	bin, err := exec.LookPath("snmpd")
	if err != nil {
		if _, err = os.Stat("/usr/sbin/snmpd"); err != nil {
			t.Skip("snmpd is not installed (apt-get install -y snmpd snmp); skipping tests against a real agent")
		}
		bin = "/usr/sbin/snmpd"
	}
	a := &agent{dir: t.TempDir(), out: &syncBuffer{}, waitc: make(chan struct{})}
	a.port = freeUDPPort(t)
	for _, sub := range []string{"state", "persist"} {
		if err := os.Mkdir(filepath.Join(a.dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}

	var rules strings.Builder
	for _, r := range outletRules {
		fmt.Fprintf(&rules, "%s %d %s %d\n", r.ctl, r.value, r.stat, r.statValue)
		// Outlets 1..4 exist (ServerTech's as tower 1, infeed 1), all off.
		for o := 1; o <= 4; o++ {
			idx := fmt.Sprint(o)
			if strings.Contains(r.ctl, ".1718.") {
				idx = "1.1." + idx
			}
			for _, f := range []string{r.ctl + "." + idx, r.stat + "." + idx} {
				p := filepath.Join(a.dir, "state", f)
				if _, err := os.Stat(p); err == nil {
					continue
				}
				v := 0 // a control object that differs from its status
				if f == r.stat+"."+idx {
					v = offStatus[r.stat]
				}
				writeFile(t, p, fmt.Sprintln(v))
			}
		}
	}
	writeFile(t, filepath.Join(a.dir, "rules"), rules.String())
	script := filepath.Join(a.dir, "pass.sh")
	writeFile(t, script, fmt.Sprintf(passScript, a.dir))

	var conf strings.Builder
	fmt.Fprintf(&conf, "agentAddress udp:127.0.0.1:%d\n", a.port)
	fmt.Fprintf(&conf, "[snmp] persistentDir %s\n", filepath.Join(a.dir, "persist"))
	fmt.Fprintf(&conf, "rocommunity %s 127.0.0.1\n", roCommunity)
	fmt.Fprintf(&conf, "rwcommunity %s 127.0.0.1\n", rwCommunity)
	fmt.Fprintf(&conf, "createUser %s SHA %q AES %q\n", v3User, v3Auth, v3Priv)
	fmt.Fprintf(&conf, "createUser %s MD5 %q DES %q\n", v3DESUser, v3Auth, v3Priv)
	fmt.Fprintf(&conf, "createUser %s\n", v3NoAuth)
	fmt.Fprintf(&conf, "rwuser %s priv\nrwuser %s priv\nrwuser %s noauth\n", v3User, v3DESUser, v3NoAuth)
	for _, root := range passRoots {
		fmt.Fprintf(&conf, "pass %s /bin/bash %s\n", root, script)
	}
	confPath := filepath.Join(a.dir, "snmpd.conf")
	writeFile(t, confPath, conf.String())

	// -C: only our config; -f: stay in the foreground so we own the
	// process; -Lo: log to stdout, captured for failures.
	a.cmd = exec.Command(bin, "-f", "-Lo", "-C", "-c", confPath, "-p", filepath.Join(a.dir, "snmpd.pid"))
	a.cmd.Env = append(os.Environ(), "SNMP_PERSISTENT_DIR="+filepath.Join(a.dir, "persist"), "MIBS=")
	a.cmd.Stdout, a.cmd.Stderr = a.out, a.out
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start snmpd: %v", err)
	}
	go func() { a.cmd.Wait(); close(a.waitc) }()
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			t.Logf("snmpd output:\n%s", a.out.String())
		}
	})
	a.waitReady(t)
	return a
}

// stop kills snmpd's process group (pass scripts included) and waits.
func (a *agent) stop() {
	select {
	case <-a.waitc:
		return
	default:
	}
	syscall.Kill(-a.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-a.waitc:
	case <-time.After(3 * time.Second):
		syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
		<-a.waitc
	}
}

func (a *agent) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g := &gosnmp.GoSNMP{Target: "127.0.0.1", Port: uint16(a.port), Community: roCommunity,
			Version: gosnmp.Version2c, Timeout: 200 * time.Millisecond, Context: context.Background()}
		if err := g.Connect(); err == nil {
			pkt, err := g.Get([]string{".1.3.6.1.2.1.1.3.0"})
			g.Conn.Close()
			if err == nil && pkt.Error == gosnmp.NoError {
				return
			}
		}
		select {
		case <-a.waitc:
			t.Fatalf("snmpd exited at start:\n%s", a.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("snmpd not answering on 127.0.0.1:%d after 10s:\n%s", a.port, a.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// read returns the agent's stored value for oid, bypassing SNMP.
func (a *agent) read(t *testing.T, oid string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(a.dir, "state", strings.TrimPrefix(oid, ".")))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// offStatus is what each status prefix reads while the outlet is off.
var offStatus = map[string]int{
	"1.3.6.1.4.1.318.1.1.4.4.2.1.3":    2,
	"1.3.6.1.4.1.318.1.1.12.3.3.1.1.4": 2,
	"1.3.6.1.4.1.318.1.1.26.9.2.3.1.5": 1,
	"1.3.6.1.4.1.13742.6.4.1.2.1.3.1":  8,
	"1.3.6.1.4.1.534.6.6.7.6.6.1.2.0":  0,
	"1.3.6.1.4.1.1718.3.2.3.1.10":      4,
	"1.3.6.1.4.1.3808.1.1.3.3.5.1.1.4": 2,
	"1.3.6.1.2.1.105.1.1.1.3.1":        2,
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o700); err != nil {
		t.Fatal(err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
