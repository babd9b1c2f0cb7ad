package lease

import (
	"reflect"
	"testing"
	"time"
)

func TestScheduleOrder(t *testing.T) {
	now := time.Now()
	qemu := map[string]string{"board": "qemu"}
	exps := []Exporter{{Name: "b", Labels: qemu, Available: true}, {Name: "a", Labels: qemu, Available: false}, {Name: "c", Labels: map[string]string{"board": "rpi"}, Available: true}}
	reqs := []Request{
		{ID: "late", Seq: 3, Selector: MustParse("board=qemu")},
		{ID: "early", Seq: 1, Selector: MustParse("board=qemu")},
		{ID: "vip", Seq: 9, Priority: 5, Selector: MustParse("board=qemu")},
		{ID: "rpi", Seq: 4, Selector: MustParse("board=rpi")},
		{ID: "future", Seq: 0, Begin: now.Add(time.Hour), Selector: MustParse("board")},
		{ID: "forbidden", Seq: 0, Selector: MustParse("board=rpi"), Policy: MustParse("board=qemu")},
	}
	got := Schedule(now, reqs, exps)
	want := []Grant{{"vip", "b"}, {"rpi", "c"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("grants %v, want %v", got, want)
	}
	pos := Positions(reqs, exps)
	if pos["vip"] != 0 || pos["early"] != 2 || pos["late"] != 3 || pos["rpi"] != 1 {
		t.Fatalf("positions %v", pos)
	}
}

func TestScheduleByName(t *testing.T) {
	exps := []Exporter{{Name: "x", Available: true}, {Name: "y", Available: true}}
	got := Schedule(time.Now(), []Request{{ID: "l", Name: "y"}}, exps)
	if !reflect.DeepEqual(got, []Grant{{"l", "y"}}) {
		t.Fatalf("grants %v", got)
	}
}
