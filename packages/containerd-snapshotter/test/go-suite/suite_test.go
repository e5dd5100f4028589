// containerd's own snapshotter conformance suite (snapshots/testsuite, from Debian's
// golang-github-containerd-containerd-dev) against lcow through containerd's own proxy client: every case gets a
// fresh root and a fresh snapshotter process (the command in $LCOW_SNAPSHOTTER), as containerd would talk to it.
// Built and run by test/conformance.test.ts (GOPATH mode, Debian's sources; no module download).
package lcowsuite

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

// start runs the snapshotter on a socket under root and waits until it says it serves.
func start(root string) (*exec.Cmd, string, error) {
	sock := filepath.Join(root, "s.sock")
	cmd := exec.Command(os.Getenv("LCOW_SNAPSHOTTER"), "--socket", sock, "--root", filepath.Join(root, "lcow"), "--no-verity")
	errs, err := cmd.StderrPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	serving := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(errs)
		said := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(os.Stderr, line)
			if !said && strings.Contains(line, "serving") {
				said = true
				serving <- nil
			}
		}
		if !said {
			serving <- fmt.Errorf("the snapshotter exited before serving")
		}
	}()
	select {
	case err := <-serving:
		if err != nil {
			cmd.Wait()
			return nil, "", err
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		return nil, "", fmt.Errorf("the snapshotter did not serve in 60 s")
	}
	return cmd, sock, nil
}

func TestLcow(t *testing.T) {
	testsuite.SnapshotterSuite(t, "lcow", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		cmd, sock, err := start(root)
		if err != nil {
			return nil, nil, err
		}
		conn, err := grpc.Dial("unix://"+sock, grpc.WithInsecure())
		if err != nil {
			cmd.Process.Kill()
			return nil, nil, err
		}
		sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "lcow")
		return sn, func() error {
			conn.Close()
			cmd.Process.Signal(os.Interrupt)
			err := cmd.Wait()
			// A stopped snapshotter leaves its unions mounted for the containers on them (the next process
			// adopts them); the suite is done with them: the driver's cleanup releases what a dead process left.
			if c := os.Getenv("LCOW_CLEANUP"); c != "" {
				out, cerr := exec.Command(c, "--root", filepath.Join(root, "lcow"), "cleanup").CombinedOutput()
				if cerr != nil {
					return fmt.Errorf("lcow cleanup: %v: %s", cerr, out)
				}
			}
			return err
		}, nil
	})
}
