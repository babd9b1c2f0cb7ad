package snmp

// A preset is one PDU family's outlet MIB: which OID and value switch an
// outlet and where its state reads back. OIDs carry an {outlet}
// placeholder. Values are SNMP Integers on every PDU we know of.
type preset struct {
	on, off action
	// cycle is the PDU's own reboot command; nil means off, wait, on.
	cycle *action
	// status is nil when the state cannot be read back (generic only).
	status *status
	// tio marks ServerTech's tower.infeed.outlet addressing.
	tio bool
}

type action struct {
	oid   string
	value int
}

type status struct {
	oid     string
	on, off []int
}

func (s *status) state(v int) (on, known bool) {
	for _, x := range s.on {
		if x == v {
			return true, true
		}
	}
	for _, x := range s.off {
		if x == v {
			return false, true
		}
	}
	return false, false
}

const (
	apcCtl       = "1.3.6.1.4.1.318.1.1.4.4.2.1.3.{outlet}"
	apcRPDU      = "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.{outlet}"
	apcRPDU2     = "1.3.6.1.4.1.318.1.1.26.9.2.4.1.5.{outlet}"
	apcRPDU2Stat = "1.3.6.1.4.1.318.1.1.26.9.2.3.1.5.{outlet}"
	raritanCtl   = "1.3.6.1.4.1.13742.6.4.1.2.1.2.1.{outlet}"
	raritanStat  = "1.3.6.1.4.1.13742.6.4.1.2.1.3.1.{outlet}"
	eatonStat    = "1.3.6.1.4.1.534.6.6.7.6.6.1.2.0.{outlet}"
	eatonOff     = "1.3.6.1.4.1.534.6.6.7.6.6.1.3.0.{outlet}"
	eatonOn      = "1.3.6.1.4.1.534.6.6.7.6.6.1.4.0.{outlet}"
	stCtl        = "1.3.6.1.4.1.1718.3.2.3.1.11.{outlet}"
	stStat       = "1.3.6.1.4.1.1718.3.2.3.1.10.{outlet}"
	cpCtl        = "1.3.6.1.4.1.3808.1.1.3.3.3.1.1.4.{outlet}"
	cpStat       = "1.3.6.1.4.1.3808.1.1.3.3.5.1.1.4.{outlet}"
	poeAdmin     = "1.3.6.1.2.1.105.1.1.1.3.1.{outlet}"
)

// presets holds one entry per PDU family (REFERENCE §4); "generic" is
// built from the config instead.
var presets = map[string]preset{
	"apc": {
		on: action{apcCtl, 1}, off: action{apcCtl, 2}, cycle: &action{apcCtl, 3},
		status: &status{apcCtl, []int{1}, []int{2}},
	},
	"apc-rpdu": {
		on: action{apcRPDU, 1}, off: action{apcRPDU, 2}, cycle: &action{apcRPDU, 3},
		status: &status{apcRPDU, []int{1}, []int{2}},
	},
	"apc-rpdu2": {
		on: action{apcRPDU2, 1}, off: action{apcRPDU2, 2}, cycle: &action{apcRPDU2, 3},
		status: &status{apcRPDU2Stat, []int{2}, []int{1}},
	},
	"raritan": {
		on: action{raritanCtl, 1}, off: action{raritanCtl, 0}, cycle: &action{raritanCtl, 2},
		status: &status{raritanStat, []int{7}, []int{8}},
	},
	// Eaton switches with a separate command object per direction.
	"eaton": {
		on: action{eatonOn, 1}, off: action{eatonOff, 1},
		status: &status{eatonStat, []int{1}, []int{0}},
	},
	// ServerTech reads outletControlState: 3 wakeOn, 5 on, 4 off.
	"servertech": {
		on: action{stCtl, 1}, off: action{stCtl, 2},
		status: &status{stStat, []int{3, 5}, []int{4}},
		tio:    true,
	},
	"cyberpower": {
		on: action{cpCtl, 1}, off: action{cpCtl, 2}, cycle: &action{cpCtl, 3},
		status: &status{cpStat, []int{1}, []int{2}},
	},
	"poe-rfc3621": {
		on: action{poeAdmin, 1}, off: action{poeAdmin, 2},
		status: &status{poeAdmin, []int{1}, []int{2}},
	},
}
