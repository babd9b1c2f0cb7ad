// Package lease is the client side of the lab controller: the login
// config, lease requests (create, wait in the queue, extend, release) and
// dialling a leased exporter through the controller's router.
package lease

import (
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// Config is ~/.config/pogo/client.yaml, written by jmp login.
type Config struct {
	Endpoint string `yaml:"endpoint"`
	Token    string `yaml:"token"`
	// CA is the controller's CA certificate (PEM text).
	CA       string `yaml:"ca,omitempty"`
	Insecure bool   `yaml:"insecure,omitempty"`
	// NoTLS talks plaintext to a controller run with --insecure-no-tls.
	NoTLS bool `yaml:"noTLS,omitempty"`
}

// EnvConfig overrides where the config is read from and written to.
const EnvConfig = "POGO_CLIENT_CONFIG"

// ConfigPath is where the client config lives.
func ConfigPath() string {
	if p := os.Getenv(EnvConfig); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = filepath.Join(os.TempDir(), "pogo-config")
	}
	return filepath.Join(dir, "pogo", "client.yaml")
}

// LoadConfig reads the config at path.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("no client config at %s: run jmp login --endpoint HOST:PORT --token TOKEN --ca CA.crt first", path)
	}
	if err != nil {
		return nil, fmt.Errorf("client config: %w", err)
	}
	var c Config
	if err := yaml.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("client config %s: %w", path, err)
	}
	if c.Endpoint == "" || c.Token == "" {
		return nil, fmt.Errorf("client config %s: endpoint and token are required", path)
	}
	return &c, nil
}

// Save writes the config to path, readable only by its owner (it holds
// the token).
func (c *Config) Save(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("client config dir: %w", err)
	}
	data, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write client config: %w", err)
	}
	return nil
}
