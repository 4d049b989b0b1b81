package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// child is a process the bench started: the server or the floor relay.
type child struct {
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	log    *tail
	done   chan struct{}
	err    error
}

// startChild starts exe with args on the given CPUs (none: anywhere). Its stderr is kept
// (the last 16 KiB) for error messages and handed line by line to onLine, if set. It is
// killed if the bench dies (Pdeathsig) and stopped by stop.
func startChild(name, exe string, args []string, cpus []int, env []string, onLine func([]byte)) (*child, error) {
	cmd := exec.Command(exe, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := &child{name: name, cmd: cmd, log: &tail{max: 16 << 10}, done: make(chan struct{})}
	var err error
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c.stdout = bufio.NewReader(out)
	errp, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := startPinned(cmd, cpus); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { // ends when the child closes stderr (it exits)
		sc := bufio.NewScanner(errp)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c.log.Write(append(sc.Bytes(), '\n'))
			if onLine != nil {
				onLine(sc.Bytes())
			}
		}
		io.Copy(io.Discard, errp)
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// startPinned starts cmd with its CPU affinity set to cpus from its first instruction, so
// that the Go runtime in it sizes GOMAXPROCS to them: the child inherits the mask of the
// thread that forks it, so that thread is pinned for the moment of the fork.
func startPinned(cmd *exec.Cmd, cpus []int) error {
	if len(cpus) == 0 {
		return cmd.Start()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return err
	}
	for _, c := range cpus {
		set.Set(c)
	}
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("CPUs %v: %w", cpus, err)
	}
	err := cmd.Start()
	if rerr := unix.SchedSetaffinity(0, &old); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// stop asks the child to end (SIGTERM, stdin closed) and kills it after grace.
func (c *child) stop(grace time.Duration) {
	c.stdin.Close()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// exited says whether the child has ended, and why.
func (c *child) exited() (bool, error) {
	select {
	case <-c.done:
		return true, c.err
	default:
		return false, nil
	}
}

// tail keeps the last max bytes written.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.b))
}

// servingURL reads the public URL from the server's "bedside serving" log line (JSON).
func servingURL(line []byte) (string, bool) {
	if !bytes.Contains(line, []byte(`"bedside serving"`)) {
		return "", false
	}
	var l struct {
		PublicURL string `json:"public_url"`
	}
	if json.Unmarshal(line, &l) != nil || l.PublicURL == "" {
		return "", false
	}
	return l.PublicURL, true
}

// environ is the environment children run with.
func environ() []string { return os.Environ() }
