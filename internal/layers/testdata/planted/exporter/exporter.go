// Package exporter is in its layer.
package exporter

import _ "planted.test/pogo/api/pin"
