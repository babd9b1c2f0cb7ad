package controller

import "encoding/json"

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic("controller: encode: " + err.Error())
	}
	return string(b)
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
