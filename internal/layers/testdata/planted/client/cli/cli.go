// Package cli imports the exporter: the planted bad import.
package cli

import _ "planted.test/pogo/exporter"
