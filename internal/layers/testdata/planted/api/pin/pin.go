// Package pin is in its layer.
package pin

// OK is imported from above, as it may be.
const OK = true
