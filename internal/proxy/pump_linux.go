package proxy

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// On Linux the bytes of forwarded connections are moved by event loops of
// the proxy's own, one per processor Go may run code on less one (the
// processor left over runs the goroutines that accept, dial and steer:
// `dso-init proxy` asks Go for one processor more than CPUs), as HAProxy
// and nginx have one per thread or process, rather than by two goroutines
// per connection: a small message then costs one readiness event, one read
// and one write, where goroutines cost a wake-up, a sleep and a read that
// finds nothing for every message (BenchmarkProxy in test/bench measures
// it against HAProxy). The goroutine that accepted a connection and
// dialed its backend hands the two sockets to a loop and waits for their
// end.
//
// A loop waits in epoll_wait on its own thread (see waitEvents), then
// takes every ready event at once. The sockets are registered
// edge-triggered: a loop reads until the kernel has nothing more, or until
// a read returns less than asked, which took all there was (the epoll set
// reports data that comes later). What a destination cannot take yet waits
// in the flow, and its source is read again once it could. A transfer
// larger than the loop's buffer goes through a pipe with splice(2), where
// the bytes never enter the proxy's memory.

// pipeSize is the size asked for each pipe (Go's own splice uses the same):
// a bulk transfer moves up to that much per call. The kernel may refuse it
// (the user's pipe limits); the default 64 KiB pipe then serves.
const pipeSize = 1 << 20

// pump is the proxy's event loops, started with the first proxy.
var (
	pumpOnce sync.Once
	pump     *loopSet
	pumpErr  error
)

type loopSet struct {
	loops []*loop
	next  atomic.Uint32
}

// startPump makes sure the event loops run; Listen calls it so that a
// proxy that cannot forward fails at its start. The first proxy's
// Options.Scheduling chooses the loops' scheduling policy.
func startPump(sched Scheduling, log *slog.Logger) error {
	pumpOnce.Do(func() { pump, pumpErr = startLoops(sched, log) })
	return pumpErr
}

func startLoops(sched Scheduling, log *slog.Logger) (*loopSet, error) {
	s := &loopSet{}
	procs := runtime.GOMAXPROCS(0)
	var refused error
	for range max(1, procs-1) {
		l, err := newLoop(procs > 1)
		if err != nil {
			return nil, fmt.Errorf("starting the proxy's event loops: %w", err)
		}
		s.loops = append(s.loops, l)
		started := make(chan error)
		go l.run(sched, started)
		refused = cmp.Or(refused, <-started)
	}
	if refused != nil {
		log.Warn("the proxy's event loops keep the normal scheduling policy", "error", refused)
	}
	return s, nil
}

// loop is one event loop: an epoll set, the pairs it moves and an eventfd
// that wakes it for work from other goroutines.
type loop struct {
	epfd, wake int
	holdP      bool        // wait holding the loop's processor while it is busy
	auto       *autoPolicy // under SchedulingAuto, when holdP

	mu    sync.Mutex
	queue []func() // run on the loop, in order

	// Only the loop's goroutine touches these.
	pairs  map[uint32]*pair
	nextID uint32
	pipes  [][2]int // empty pipes to reuse
	buf    [64 << 10]byte
}

// wakeID is the epoll id of the loop's eventfd; pairs start at 1.
const wakeID = 0

func newLoop(holdP bool) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeID}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("epoll: %w", err)
	}
	return &loop{epfd: epfd, wake: wake, holdP: holdP, pairs: map[uint32]*pair{}, nextID: wakeID + 1}, nil
}

// do runs f on the loop, after what was asked before it.
func (l *loop) do(f func()) {
	l.mu.Lock()
	l.queue = append(l.queue, f)
	first := len(l.queue) == 1
	l.mu.Unlock()
	if first {
		one := [8]byte{1}
		unix.Write(l.wake, one[:]) // EAGAIN: the counter is far from full, it is already set
	}
}

// run is the loop, on a goroutine of its own; started gets the error of
// its move to SCHED_BATCH under SchedulingBatch, else nil. Under
// SchedulingAuto a loop that waits holding its processor chooses its
// policy as it goes (sched_linux.go); one that does not, the only loop of
// a proxy with one processor, keeps the normal policy.
func (l *loop) run(sched Scheduling, started chan<- error) {
	var err error
	switch {
	case sched == SchedulingBatch:
		err = scheduleBatch()
	case sched == SchedulingAuto && l.holdP:
		l.auto = newAutoPolicy()
	}
	started <- err
	events := make([]unix.EpollEvent, 256)
	for {
		n, slept := l.waitEvents(events)
		if l.auto != nil {
			l.auto.observe(time.Now(), n, slept)
		}
		for _, ev := range events[:n] {
			if ev.Fd == wakeID {
				l.runQueue()
				continue
			}
			// Pairs ended earlier in this batch are gone; their ids are
			// never reused while events may name them.
			p := l.pairs[uint32(ev.Fd)]
			if p == nil {
				continue
			}
			side := int(ev.Pad)
			if ev.Events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				p.flows[side].hup = true
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				p.move(side) // the direction this socket feeds
			}
			// Every event names all the socket is ready for, writing
			// mostly included: the direction that writes to it is moved
			// only when it waits for room.
			if f := &p.flows[1-side]; f.waiting() && ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				p.move(1 - side)
			}
		}
	}
}

func (l *loop) runQueue() {
	var buf [8]byte
	unix.Read(l.wake, buf[:]) // before taking the queue: a later do wakes the loop again
	l.mu.Lock()
	queue := l.queue
	l.queue = nil
	l.mu.Unlock()
	for _, f := range queue {
		f()
	}
}

// pipe returns an empty pipe, a reused one when there is.
func (l *loop) pipe() ([2]int, error) {
	if n := len(l.pipes); n > 0 {
		p := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]
		return p, nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return p, fmt.Errorf("pipe2: %w", err)
	}
	unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, pipeSize) // best effort: see pipeSize
	return p, nil
}

// putPipe keeps an empty pipe for reuse and closes one that holds bytes.
func (l *loop) putPipe(p [2]int, empty bool) {
	if empty && len(l.pipes) < 64 {
		l.pipes = append(l.pipes, p)
		return
	}
	unix.Close(p[0])
	unix.Close(p[1])
}

// pair is one forwarded connection in a loop.
type pair struct {
	l     *loop
	id    uint32
	fds   [2]int  // the client's socket, the backend's
	flows [2]flow // client to backend, backend to client
	ended bool
	done  chan struct{} // closed when ended
}

// flow is one direction of a pair.
type flow struct {
	pending []byte // read, not yet written
	spliced bool   // the flow goes through pipe
	pipe    [2]int // read end, write end
	queued  int    // bytes in the pipe
	hup     bool   // the source's peer hung up or failed: read until the end
	eof     bool   // the source ended; the destination is shut for writing once nothing is left
	shut    bool
	count   *atomic.Uint64
}

// forward moves the bytes of c between its client and backend sockets in
// an event loop, and returns when both directions ended or c was closed.
func (p *Proxy) forward(c *conn, pp *port) {
	set := pump // Listen made sure it runs
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	pr := &pair{done: make(chan struct{})}
	pr.flows[0].count, pr.flows[1].count = &pp.toBackend, &pp.toClient
	fds, err := dupSockets(c.client, c.backend)
	if err != nil {
		c.mu.Unlock()
		p.log.Warn("cannot forward a connection; client closed", "port", pp.Listen, "error", err)
		return
	}
	pr.fds = fds
	// The loop owns the sockets from now on: the net.TCPConns are closed
	// (their descriptors only; the connections live on in the duplicates),
	// and closing c asks the loop to end the pair.
	c.client.Close()
	c.backend.Close()
	pr.early()
	pr.l = set.loops[set.next.Add(1)%uint32(len(set.loops))]
	pr.l.do(pr.start)
	c.stop = func() { pr.l.do(pr.end) } // after the start in the loop's queue
	c.mu.Unlock()
	<-pr.done
}

// dupSockets duplicates the descriptors of two connections.
func dupSockets(a, b *net.TCPConn) ([2]int, error) {
	fds := [2]int{-1, -1}
	for i, c := range []*net.TCPConn{a, b} {
		var dupErr error
		rc, err := c.SyscallConn()
		if err == nil {
			err = rc.Control(func(fd uintptr) {
				fds[i], dupErr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
			})
		}
		if err = cmp.Or(err, dupErr); err != nil {
			if i == 1 {
				unix.Close(fds[0])
			}
			return fds, fmt.Errorf("duplicating a socket: %w", err)
		}
	}
	return fds, nil
}

// early moves what the client sent already (the request of a client that
// connects for each one) to the backend on the goroutine that dialed,
// before the pair goes to its loop: the request then does not wait for the
// loop's thread to wake, one hand-over between threads less on the way to
// the backend. What the backend does not take waits in the flow; the loop
// goes on from there, since registering the sockets reports what they are
// ready for. The end of the client's stream, or an error, is left for the
// loop to read again.
func (p *pair) early() {
	var buf [2 << 10]byte
	n, err := rawRead(p.fds[0], buf[:])
	if err != nil || n == 0 {
		return
	}
	f := &p.flows[0]
	w, err := rawWrite(p.fds[1], buf[:n])
	if err != nil {
		w = 0
	}
	f.count.Add(uint64(w))
	if w < n {
		f.pending = append([]byte(nil), buf[w:n]...)
	}
}

// start registers the pair with its loop; the kernel reports the sockets'
// present readiness at once, which starts the moves.
func (p *pair) start() {
	l := p.l
	for l.nextID == wakeID || l.pairs[l.nextID] != nil {
		l.nextID++
	}
	p.id = l.nextID
	l.nextID++
	l.pairs[p.id] = p
	for side, fd := range p.fds {
		ev := unix.EpollEvent{
			Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET,
			Fd:     int32(p.id),
			Pad:    int32(side),
		}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			p.end()
			return
		}
	}
}

// waiting tells whether f holds bytes its destination did not take yet.
func (f *flow) waiting() bool { return len(f.pending) > 0 || f.queued > 0 }

// move moves what it can of direction i (0: client to backend) and returns
// when the source has nothing more for now or the destination takes
// nothing more for now. An error on either side ends the whole pair: it
// cannot go on.
//
// A flow starts by reading into the loop's buffer and writing from it, the
// cheapest way for the small messages of most protocols; a read that
// returns less than the buffer took all the socket had, and unless the peer
// hung up (the end must then be read too) the edge-triggered epoll reports
// any later data, so no read is spent to learn the socket is empty. A read
// that fills the buffer turns the flow to splice(2) through a pipe, where a
// large transfer never enters the proxy's memory.
func (p *pair) move(i int) {
	f := &p.flows[i]
	src, dst := p.fds[i], p.fds[1-i]
	for !p.ended && !f.shut {
		var n int
		var err error
		switch {
		case len(f.pending) > 0:
			if n, err = rawWrite(dst, f.pending); err == nil {
				f.count.Add(uint64(n))
				f.pending = f.pending[n:]
			}
		case f.queued > 0:
			if n, err = splice(f.pipe[0], dst, f.queued); err == nil {
				f.queued -= n
				f.count.Add(uint64(n))
			}
		case f.eof:
			// Pass the half-close on: the peer sees the end and may
			// still answer.
			f.shut = true
			if err := unix.Shutdown(dst, unix.SHUT_WR); err != nil || p.flows[1-i].shut {
				p.end()
			}
			return
		case f.spliced:
			if n, err = splice(src, f.pipe[1], pipeSize); err == nil {
				f.queued = n
				f.eof = n == 0
			}
		default:
			buf := p.l.buf[:]
			if n, err = rawRead(src, buf); err != nil || n == 0 {
				f.eof = err == nil
				break
			}
			w, werr := rawWrite(dst, buf[:n])
			if werr != nil && werr != unix.EAGAIN {
				err = werr
				break
			}
			f.count.Add(uint64(w))
			if w < n {
				f.pending = append(f.pending[:0], buf[w:n]...)
			}
			if n == len(buf) {
				if pipe, perr := p.l.pipe(); perr == nil {
					f.pipe, f.spliced = pipe, true
				}
			} else if !f.hup && w == n {
				return
			}
		}
		switch err {
		case nil:
		case unix.EAGAIN:
			return
		case unix.EINTR:
		default:
			p.end()
			return
		}
	}
}

// end closes the pair's sockets (which takes them out of the epoll set)
// and gives back its pipes; it runs on the loop.
func (p *pair) end() {
	if p.ended {
		return
	}
	p.ended = true
	delete(p.l.pairs, p.id)
	for _, fd := range p.fds {
		unix.Close(fd)
	}
	for _, f := range p.flows {
		if f.spliced {
			p.l.putPipe(f.pipe, f.queued == 0)
		}
	}
	close(p.done)
}

// scheduleBatch locks the calling goroutine to its thread, for good, and
// moves the thread to the SCHED_BATCH policy (SchedulingBatch).
func scheduleBatch() error {
	runtime.LockOSThread()
	if err := setPolicy(true); err != nil {
		runtime.UnlockOSThread()
		return err
	}
	return nil
}

// setPolicy moves the calling thread to SCHED_BATCH, or back to the normal
// policy. Threads the runtime starts from it keep the normal policy
// (SCHED_RESET_ON_FORK). Any process may choose either for its own
// threads.
func setPolicy(batch bool) error {
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_NORMAL, Flags: unix.SCHED_FLAG_RESET_ON_FORK}
	name := "SCHED_NORMAL"
	if batch {
		attr.Policy, name = unix.SCHED_BATCH, "SCHED_BATCH"
	}
	if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
		return fmt.Errorf("sched_setattr(%s): %w", name, err)
	}
	return nil
}

// The loop's system calls are made raw, but for its wait when idle: the Go
// scheduler then does not prepare to hand the loop's processor to another
// thread around each one, which took a sixth of the proxy's CPU under many
// small requests (measured with perf). Only the waits block; every
// descriptor is non-blocking. Each conversion of a pointer to uintptr is
// in the call to the assembly function, which keeps the memory in place
// until the call returns.

// busyWait is how long a loop waits for events holding its processor
// (see waitEvents).
const busyWait = 10 // milliseconds

// waitEvents waits for the loop's next events, and tells whether it slept
// for them (did not find them ready after yielding). A busy loop waits as
// HAProxy's threads do, blocked in epoll_wait on its own thread, keeping
// its processor (Go's P) through the raw system call, so that an event
// wakes this thread alone and the loops of a proxy run on all the CPUs at
// once. With one loop the other CPU idled while it worked through a batch
// (BenchmarkProxy's idle column: 11-15% of the CPU time where HAProxy left
// 3-6%). Waiting in Go's poller woke the runtime's polling thread besides
// the loop's; a wait in a system call the scheduler sees has it hand the
// processor over and back: both forwarded fewer small requests. A loop
// that saw no event for busyWait waits in a system call the scheduler
// sees, so that an idle proxy lets Go's runtime rest (under the normal
// policy, SchedulingAuto's loops too); so does the only loop of a proxy
// with one processor, which the other goroutines need. A signal (the
// scheduler preempting the loop, or stopping the world for the garbage
// collector) ends either wait: Gosched then lets the scheduler have the
// processor it asked for.
func (l *loop) waitEvents(events []unix.EpollEvent) (n int, slept bool) {
	if l.holdP {
		if n, err := l.yieldFirst(events); n > 0 || err != nil {
			return waited(n, err), false
		}
		if n, err := l.pollRaw(events, busyWait); n > 0 || err != nil {
			return waited(n, err), true
		}
		if l.auto != nil {
			l.auto.rest(time.Now())
		}
	}
	r, _, e := unix.Syscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), ^uintptr(0), 0, 0)
	return waited(result(r, e)), true
}

// yieldFirst lets a task the scheduler finds due run before the loop, if
// any, then takes the events that are ready without waiting. A loop woken
// by a message most often preempted its writer, the client or the backend,
// which has more to write: that one can go on first, while the loop stays
// runnable rather than asleep, and takes what was written in one batch
// when it runs again, instead of being woken (which the writer pays for)
// and preempting the writer for each message. With no task due the yield
// returns at once. BenchmarkProxy measured 7% more small requests with it
// (two runs side by side with the loops without it), and no longer tail
// beside processes that never sleep (DSO_BENCH_PROXY_BUSY, one run each
// way), as SCHED_BATCH has (SchedulingBatch): a yield gives the CPU up once,
// where batch gives up preempting at all.
func (l *loop) yieldFirst(events []unix.EpollEvent) (int, error) {
	unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
	return l.pollRaw(events, 0)
}

// pollRaw waits up to ms milliseconds for events in a raw epoll_pwait,
// keeping the loop's processor.
func (l *loop) pollRaw(events []unix.EpollEvent, ms int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(ms), 0, 0)
	return result(r, e)
}

// waited returns the events of a wait, none after a signal.
func waited(n int, err error) int {
	if err == unix.EINTR {
		runtime.Gosched()
		return 0
	}
	if err != nil {
		panic(fmt.Sprintf("proxy event loop: epoll_wait: %v", err))
	}
	return n
}

func rawRead(fd int, b []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return result(r, e)
}

func rawWrite(fd int, b []byte) (int, error) {
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return result(r, e)
}

// splice moves up to n bytes from in to out.
func splice(in, out, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
	return result(r, e)
}

func result(r uintptr, e syscall.Errno) (int, error) {
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
