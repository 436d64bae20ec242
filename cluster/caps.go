package cluster

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// capNetAdmin is CAP_NET_ADMIN's bit in /proc/PID/status's capability masks.
const capNetAdmin = 12

// needNetAdmin explains a refused address change. uid is the effective UID
// and status /proc/self/status's text. A non-root process whose bounding
// set has CAP_NET_ADMIN but whose effective set lacks it is what
// `docker run --cap-add NET_ADMIN` makes of an image with a non-root USER
// (kelpie's is 65532): Docker raises only the bounding set for non-root
// users, so the error names the two remedies. Otherwise it is
// ErrNeedNetAdmin as is. The result always wraps ErrNeedNetAdmin.
func needNetAdmin(uid int, status string) error {
	var eff, bnd uint64
	var haveEff, haveBnd bool
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		switch {
		case err != nil:
		case k == "CapEff":
			eff, haveEff = n, true
		case k == "CapBnd":
			bnd, haveBnd = n, true
		}
	}
	const bit = uint64(1) << capNetAdmin
	if uid == 0 || !haveEff || !haveBnd || eff&bit != 0 || bnd&bit == 0 {
		return ErrNeedNetAdmin
	}
	return fmt.Errorf("%w: kelpie runs as UID %d and has CAP_NET_ADMIN in its bounding set but not in its effective set, "+
		"which is what --cap-add NET_ADMIN gives a non-root user (the image runs as 65532): "+
		"run it as root with only that capability added (docker run --user 0:0 --cap-add NET_ADMIN), "+
		"or give the binary the file capability (setcap cap_net_admin+ep /kelpie in an image built on top of it)",
		ErrNeedNetAdmin, uid)
}
