// Package power imports a test harness from non-test code.
package power

import _ "planted.test/pogo/exporter/exportertest"
