package qemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/pogolab/pogo/drivers"
)

// Config is the `qemu` kind's config.
type Config struct {
	// Arch is the guest: aarch64 (default) or x86_64.
	Arch string `yaml:"arch"`
	CPUs int    `yaml:"cpus"`
	// Memory is the RAM size: MiB as a plain number, or with a K/M/G suffix.
	Memory string `yaml:"memory"`
	// BIOS is the firmware; Debian's U-Boot for the arch by default.
	BIOS string `yaml:"bios"`
	// Disk is the raw disk image; <state dir>/<path>.img by default.
	Disk string `yaml:"disk"`
	// DiskSize is the size the disk is created with (bytes, or K/M/G/T).
	DiskSize string `yaml:"disk_size"`
	// KVM is auto, on or off; auto uses KVM only when the host runs the
	// guest's arch and /dev/kvm opens.
	KVM string `yaml:"kvm"`
	// Hostfwd forwards host ports into the board's user network, in QEMU's
	// syntax: "tcp:127.0.0.1:2222-:22".
	Hostfwd   []string `yaml:"hostfwd"`
	ExtraArgs []string `yaml:"extra_args"`
	// QEMU overrides the emulator binary.
	QEMU string `yaml:"qemu"`
	// Scrollback is how many bytes of console output are kept for replay.
	Scrollback int `yaml:"scrollback"`
	// CycleDelay is how long a power cycle stays off when the caller names
	// no delay.
	CycleDelay time.Duration `yaml:"cycle_delay"`
}

// arch holds what differs between guest architectures.
type arch struct {
	qemu, qemuPackage string
	bios              string
	goarch            string
	machine, cpu      string
	// bus is the virtio transport's device suffix ("device" for MMIO).
	bus string
}

var arches = map[string]arch{
	"aarch64": {
		qemu: "qemu-system-aarch64", qemuPackage: "qemu-system-arm",
		bios:   "/usr/lib/u-boot/qemu_arm64/u-boot.bin",
		goarch: "arm64", machine: "virt", cpu: "cortex-a57", bus: "device",
	},
	"x86_64": {
		qemu: "qemu-system-x86_64", qemuPackage: "qemu-system-x86",
		bios:   "/usr/lib/u-boot/qemu-x86_64/u-boot.rom",
		goarch: "amd64", machine: "q35", cpu: "qemu64", bus: "pci",
	},
}

const biosPackage = "u-boot-qemu"

// setup is a checked config, ready to start QEMU with.
type setup struct {
	arch     arch
	qemu     string // resolved binary
	bios     string
	disk     string
	diskSize int64
	memMiB   int64
	cpus     int
	kvm      bool
	hostfwd  []string
	extra    []string
	cycle    time.Duration
	scroll   int
}

// check validates c; every problem is a FieldError naming its key.
// stateDir and path give the default disk location.
func (c Config) check(stateDir, path string) (*setup, error) {
	s := &setup{cpus: 1, memMiB: 1024, diskSize: 1 << 30, cycle: 200 * time.Millisecond, scroll: c.Scrollback}
	name := c.Arch
	if name == "" {
		name = "aarch64"
	}
	a, ok := arches[name]
	if !ok {
		return nil, drivers.FieldErr("arch", "must be aarch64 or x86_64, got %q", c.Arch)
	}
	s.arch = a

	bin := c.QEMU
	if bin == "" {
		bin = a.qemu
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		return nil, drivers.FieldErr("qemu", "%s not found (install the Debian package %s): %v", bin, a.qemuPackage, unwrapExec(err))
	}
	s.qemu = p

	s.bios = c.BIOS
	if s.bios == "" {
		s.bios = a.bios
	}
	if st, err := os.Stat(s.bios); err != nil || !st.Mode().IsRegular() {
		why := "not a regular file"
		if err != nil {
			why = unwrapPath(err)
		}
		return nil, drivers.FieldErr("bios", "firmware %s: %s (Debian's U-Boot is in the package %s)", s.bios, why, biosPackage)
	}

	if c.CPUs < 0 || c.CPUs > 64 {
		return nil, drivers.FieldErr("cpus", "must be between 1 and 64, got %d", c.CPUs)
	}
	if c.CPUs > 0 {
		s.cpus = c.CPUs
	}
	if c.Memory != "" {
		mem, err := parseSize(c.Memory, 1<<20)
		if err != nil {
			return nil, drivers.FieldErr("memory", "%v", err)
		}
		if mem < 64<<20 || mem%(1<<20) != 0 {
			return nil, drivers.FieldErr("memory", "must be a whole number of MiB, at least 64M, got %q", c.Memory)
		}
		s.memMiB = mem >> 20
	}
	if c.DiskSize != "" {
		if s.diskSize, err = parseSize(c.DiskSize, 1); err != nil {
			return nil, drivers.FieldErr("disk_size", "%v", err)
		}
		if s.diskSize < 1<<20 || s.diskSize%512 != 0 {
			return nil, drivers.FieldErr("disk_size", "must be a multiple of 512 bytes, at least 1M, got %q", c.DiskSize)
		}
	}
	s.disk = c.Disk
	if s.disk == "" {
		if stateDir == "" {
			return nil, drivers.FieldErr("disk", "required: this exporter has no state directory for a default disk")
		}
		s.disk = filepath.Join(stateDir, strings.ReplaceAll(path, "/", "_")+".img")
	}
	if s.disk, err = filepath.Abs(s.disk); err != nil {
		return nil, drivers.FieldErr("disk", "%v", err)
	}
	if strings.Contains(s.disk, ",") {
		// QEMU's -drive option syntax would split the path.
		return nil, drivers.FieldErr("disk", "path %q must not contain a comma", s.disk)
	}

	switch c.KVM {
	case "", "auto":
		s.kvm = kvmUsable(a) == nil
	case "on":
		if err := kvmUsable(a); err != nil {
			return nil, drivers.FieldErr("kvm", "on, but %v", err)
		}
		s.kvm = true
	case "off":
	default:
		return nil, drivers.FieldErr("kvm", "must be auto, on or off, got %q", c.KVM)
	}
	for _, f := range c.Hostfwd {
		if !validHostfwd(f) {
			return nil, drivers.FieldErr("hostfwd", "%q is not [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport", f)
		}
	}
	s.hostfwd = c.Hostfwd
	s.extra = c.ExtraArgs
	if c.Scrollback < 0 {
		return nil, drivers.FieldErr("scrollback", "must not be negative, got %d", c.Scrollback)
	}
	if c.CycleDelay < 0 {
		return nil, drivers.FieldErr("cycle_delay", "must not be negative, got %s", c.CycleDelay)
	}
	if c.CycleDelay > 0 {
		s.cycle = c.CycleDelay
	}
	return s, nil
}

// kvmUsable tells why KVM cannot run the guest, or nil.
func kvmUsable(a arch) error {
	if runtime.GOARCH != a.goarch {
		return fmt.Errorf("KVM needs a %s host, this one is %s", a.goarch, runtime.GOARCH)
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("KVM unavailable: %w", err)
	}
	return f.Close()
}

func unwrapExec(err error) error {
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}

func unwrapPath(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// parseSize reads "64M", "1G", "512KiB", "1048576": a number with an
// optional binary suffix. A plain number counts unit bytes.
func parseSize(s string, unit int64) (int64, error) {
	t := strings.TrimSpace(s)
	mult := unit
	if b, ok := strings.CutSuffix(t, "B"); ok {
		t, mult = b, 1
	}
	if n := len(t); n > 0 {
		if m, ok := sizePrefixes[t[n-1]]; ok {
			t, mult = t[:n-1], m
		} else if n > 1 && t[n-1] == 'i' {
			if m, ok := sizePrefixes[t[n-2]]; ok {
				t, mult = t[:n-2], m
			}
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size like 512M or 2G", s)
	}
	if n > (1<<50)/mult {
		return 0, fmt.Errorf("%q is too large (over 1 PiB)", s)
	}
	return n * mult, nil
}

var sizePrefixes = map[byte]int64{'k': 1 << 10, 'K': 1 << 10, 'M': 1 << 20, 'm': 1 << 20, 'G': 1 << 30, 'g': 1 << 30, 'T': 1 << 40, 't': 1 << 40}

func validHostfwd(f string) bool {
	host, guest, ok := strings.Cut(f, "-")
	if !ok || strings.Contains(f, ",") {
		return false
	}
	parts := strings.Split(host, ":")
	if len(parts) == 3 {
		if parts[0] != "tcp" && parts[0] != "udp" {
			return false
		}
		parts = parts[1:]
	}
	if len(parts) != 2 || !isPort(parts[1]) {
		return false
	}
	gparts := strings.Split(guest, ":")
	return len(gparts) == 2 && isPort(gparts[1])
}

func isPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n < 65536
}

// uartFD is the descriptor QEMU inherits the UART's pty master on (the
// first of exec.Cmd's ExtraFiles).
const uartFD = 3

// args is QEMU's command line for s, with the QMP socket at qmp and the
// UART on the pty master QEMU inherits as descriptor uartFD.
//
// The pty is the driver's, not one QEMU creates (-chardev pty): its tty
// end is open and read before QEMU starts, so the console has the first
// instruction's output without starting paused, and QEMU reads input at
// once. QEMU's own pty backend only notices a reader on its once-a-second
// reconnect timer and until then leaves the keys typed unread.
func (s *setup) args(qmp, name string) []string {
	a := []string{
		"-name", name,
		"-nodefaults", "-no-user-config", "-display", "none",
		"-M", s.arch.machine,
		"-smp", strconv.Itoa(s.cpus),
		"-m", strconv.FormatInt(s.memMiB, 10) + "M",
		"-bios", s.bios,
	}
	if s.kvm {
		a = append(a, "-accel", "kvm", "-cpu", "host")
	} else {
		a = append(a, "-accel", "tcg", "-cpu", s.arch.cpu)
	}
	netdev := "user,id=net0"
	for _, f := range s.hostfwd {
		netdev += ",hostfwd=" + f
	}
	a = append(a,
		"-netdev", netdev,
		"-device", "virtio-net-"+s.arch.bus+",netdev=net0",
		"-drive", "if=none,id=disk0,format=raw,file="+s.disk,
		"-device", "virtio-blk-"+s.arch.bus+",drive=disk0",
		// A tty chardev on the inherited fd (through an fd set, as QEMU
		// opens nothing else by number): raw mode, no reconnect polling.
		"-add-fd", "fd="+strconv.Itoa(uartFD)+",set=1,opaque=uart0",
		"-chardev", "serial,id=uart0,path=/dev/fdset/1",
		"-serial", "chardev:uart0",
		"-qmp", "unix:"+qmp+",server=on,wait=off",
	)
	return append(a, s.extra...)
}

// Command returns the emulator and the command line the driver runs for
// c, its disk resolved against stateDir and name as New does: for
// starting the same machine by hand (the specs' baselines). The process
// must inherit the master end of a pty as its first extra file
// (exec.Cmd.ExtraFiles[0]); the pty's tty end is then the UART. QMP
// listens on the socket at qmp.
func Command(c Config, stateDir, name, qmp string) (string, []string, error) {
	s, err := c.check(stateDir, name)
	if err != nil {
		return "", nil, err
	}
	return s.qemu, s.args(qmp, name), nil
}
