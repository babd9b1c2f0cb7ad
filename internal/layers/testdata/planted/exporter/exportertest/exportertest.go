// Package exportertest is a harness: it may cross the layers.
package exportertest

import _ "planted.test/pogo/client/cli"
