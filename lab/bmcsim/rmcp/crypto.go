package rmcp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"hash"
)

// Algorithm numbers from IPMI v2.0 table 13-17..13-19.
const (
	authHMACSHA1   = 0x01
	authHMACSHA256 = 0x03

	integHMACSHA1_96   = 0x01
	integHMACSHA256128 = 0x04

	confAESCBC128 = 0x01
)

// Suite is an RMCP+ cipher suite the simulator accepts.
type Suite struct {
	ID    byte
	Auth  byte
	Integ byte
	Conf  byte
}

// Suites lists what the simulator accepts: 17 (ipmitool 1.8.19's default
// for lanplus, picked from Get Channel Cipher Suites) and 3 (the long-time
// default, still what most BMCs offer).
var Suites = []Suite{
	{ID: 3, Auth: authHMACSHA1, Integ: integHMACSHA1_96, Conf: confAESCBC128},
	{ID: 17, Auth: authHMACSHA256, Integ: integHMACSHA256128, Conf: confAESCBC128},
}

func suiteFor(auth, integ, conf byte) (Suite, bool) {
	for _, s := range Suites {
		if s.Auth == auth && s.Integ == integ && s.Conf == conf {
			return s, true
		}
	}
	return Suite{}, false
}

func (s Suite) authHash() func() hash.Hash {
	if s.Auth == authHMACSHA256 {
		return sha256.New
	}
	return sha1.New
}

// rakp4Len is the truncated ICV length RAKP 4 carries.
func (s Suite) rakp4Len() int {
	if s.Auth == authHMACSHA256 {
		return 16
	}
	return 12
}

// integLen is the AuthCode length of integrity-protected packets.
func (s Suite) integLen() int {
	if s.Integ == integHMACSHA256128 {
		return 16
	}
	return 12
}

func (s Suite) integHash() func() hash.Hash {
	if s.Integ == integHMACSHA256128 {
		return sha256.New
	}
	return sha1.New
}

func mac(h func() hash.Hash, key []byte, parts ...[]byte) []byte {
	m := hmac.New(h, key)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// encryptAES applies the IPMI confidentiality trailer (pad bytes 1..n then
// n) and AES-CBC-128 with a fresh IV prepended.
func encryptAES(key, plain []byte) []byte {
	pad := (aes.BlockSize - (len(plain)+1)%aes.BlockSize) % aes.BlockSize
	buf := make([]byte, 0, len(plain)+pad+1)
	buf = append(buf, plain...)
	for i := 1; i <= pad; i++ {
		buf = append(buf, byte(i))
	}
	buf = append(buf, byte(pad))
	block, _ := aes.NewCipher(key[:16])
	iv := randBytes(aes.BlockSize)
	out := make([]byte, aes.BlockSize+len(buf))
	copy(out, iv)
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(out[aes.BlockSize:], buf)
	return out
}

var errBadCipherText = errors.New("malformed AES-CBC payload")

func decryptAES(key, payload []byte) ([]byte, error) {
	if len(payload) < 2*aes.BlockSize || len(payload)%aes.BlockSize != 0 {
		return nil, errBadCipherText
	}
	block, _ := aes.NewCipher(key[:16])
	out := make([]byte, len(payload)-aes.BlockSize)
	cipher.NewCBCDecrypter(block, payload[:aes.BlockSize]).CryptBlocks(out, payload[aes.BlockSize:])
	pad := int(out[len(out)-1])
	if pad+1 > len(out) || pad >= aes.BlockSize {
		return nil, errBadCipherText
	}
	return out[:len(out)-pad-1], nil
}
