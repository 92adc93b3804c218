package vaultfile

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// Layout of format version 1 (all integers big-endian):
//
//	magic     8  "DSOVAULT"
//	version   1  1
//	mode      1  1 = key file, 2 = passphrase
//	salt     16  random per file: HKDF salt, and Argon2id salt in passphrase mode
//	argon2    9  passphrase mode only: time u32, memory KiB u32, threads u8
//	nonce    12  random per write
//	check    32  HMAC-SHA256(check key, checkLabel): tells a wrong key apart
//	sum       8  first 8 bytes of SHA-256 over the bytes above: tells a
//	             damaged header apart from a wrong key
//	sealed    …  AES-256-GCM(encryption key, nonce, payload, additional data = all of the above)
//
// The encryption and check keys are HKDF-SHA256 subkeys of the master key
// (the raw key, or Argon2id of the passphrase) with the salt.
const (
	magic         = "DSOVAULT"
	formatVersion = 1
	saltSize      = 16
	argonSize     = 9
	nonceSize     = 12
	checkSize     = sha256.Size
	sumSize       = 8
	tagSize       = 16
	checkLabel    = "dso vault key check v1"
	infoEncrypt   = "dso vault v1 encryption"
	infoCheck     = "dso vault v1 key check"
)

// MaxValueSize is the largest value a secret may hold.
const MaxValueSize = 1 << 20

// maxNameSize bounds a secret name.
const maxNameSize = 4096

// header is the parsed clear part of a vault file.
type header struct {
	mode   Mode
	salt   []byte
	argon  Argon2Params
	nonce  []byte
	check  []byte
	length int // bytes of header in the file
}

func headerSize(m Mode) int {
	n := len(magic) + 2 + saltSize + nonceSize + checkSize + sumSize
	if m == ModePassphrase {
		n += argonSize
	}
	return n
}

// parseHeader reads and checks the header. Every failure is an integrity
// failure: the header is not secret and is protected by its sum.
func parseHeader(data []byte) (header, error) {
	var h header
	if len(data) < len(magic)+2 {
		return h, fmt.Errorf("file is %d bytes, too short for a vault header", len(data))
	}
	if string(data[:len(magic)]) != magic {
		return h, errors.New("not a DSO vault file (bad magic bytes)")
	}
	if v := data[len(magic)]; v != formatVersion {
		return h, fmt.Errorf("unsupported format version %d (this build reads version %d)", v, formatVersion)
	}
	h.mode = Mode(data[len(magic)+1])
	if h.mode != ModeKeyFile && h.mode != ModePassphrase {
		return h, fmt.Errorf("unknown key mode %d", byte(h.mode))
	}
	h.length = headerSize(h.mode)
	if len(data) < h.length+tagSize {
		return h, fmt.Errorf("file is %d bytes, too short for a %s vault (at least %d)", len(data), h.mode, h.length+tagSize)
	}
	sum := sha256.Sum256(data[:h.length-sumSize])
	if !bytes.Equal(sum[:sumSize], data[h.length-sumSize:h.length]) {
		return h, errors.New("header checksum mismatch")
	}
	p := len(magic) + 2
	h.salt = data[p : p+saltSize]
	p += saltSize
	if h.mode == ModePassphrase {
		h.argon = Argon2Params{
			Time:      binary.BigEndian.Uint32(data[p:]),
			MemoryKiB: binary.BigEndian.Uint32(data[p+4:]),
			Threads:   data[p+8],
		}
		if err := h.argon.check(); err != nil {
			return h, fmt.Errorf("bad key derivation parameters: %v", err)
		}
		p += argonSize
	}
	h.nonce = data[p : p+nonceSize]
	p += nonceSize
	h.check = data[p : p+checkSize]
	return h, nil
}

// keys are the subkeys derived for one file (one salt).
type keys struct {
	mode  Mode
	salt  []byte
	argon Argon2Params
	enc   []byte
	check []byte // HMAC of checkLabel under the check subkey
}

// deriveKeys derives the subkeys of k for a file with salt and (passphrase
// mode) Argon2id params.
func deriveKeys(k Key, salt []byte, argon Argon2Params) (*keys, error) {
	var master []byte
	switch k.mode {
	case ModeKeyFile:
		master = k.raw
	case ModePassphrase:
		master = argon2.IDKey(k.passphrase, salt, argon.Time, argon.MemoryKiB, argon.Threads, KeySize)
	default:
		return nil, fmt.Errorf("%w: no key given", ErrKey)
	}
	enc, err := hkdf.Key(sha256.New, master, salt, infoEncrypt, KeySize)
	if err != nil {
		return nil, err
	}
	ck, err := hkdf.Key(sha256.New, master, salt, infoCheck, KeySize)
	if err != nil {
		return nil, err
	}
	mac := hmac.New(sha256.New, ck)
	mac.Write([]byte(checkLabel))
	return &keys{mode: k.mode, salt: bytes.Clone(salt), argon: argon, enc: enc, check: mac.Sum(nil)}, nil
}

// newKeys derives subkeys for a new file with a fresh salt.
func newKeys(k Key) (*keys, error) {
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	return deriveKeys(k, salt, k.params)
}

// seal encrypts the payload into a whole file with a fresh nonce.
func seal(ks *keys, payload []byte) ([]byte, error) {
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	hlen := headerSize(ks.mode)
	out := make([]byte, 0, hlen+len(payload)+tagSize)
	out = append(out, magic...)
	out = append(out, formatVersion, byte(ks.mode))
	out = append(out, ks.salt...)
	if ks.mode == ModePassphrase {
		out = binary.BigEndian.AppendUint32(out, ks.argon.Time)
		out = binary.BigEndian.AppendUint32(out, ks.argon.MemoryKiB)
		out = append(out, ks.argon.Threads)
	}
	out = append(out, nonce...)
	out = append(out, ks.check...)
	sum := sha256.Sum256(out)
	out = append(out, sum[:sumSize]...)
	aead, err := newAEAD(ks.enc)
	if err != nil {
		return nil, err
	}
	return aead.Seal(out, nonce, payload, out[:hlen]), nil
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// openFile checks and decrypts a whole file. Errors wrap ErrIntegrity or
// ErrWrongKey and say what is wrong, without any path (the caller adds it).
func openFile(data []byte, k Key) (*keys, []byte, error) {
	h, err := parseHeader(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s", ErrIntegrity, err)
	}
	if k.mode != h.mode {
		return nil, nil, fmt.Errorf("%w: the vault is protected by a %s but the key given (%s) is a %s", ErrWrongKey, h.mode, k.source, k.mode)
	}
	ks, err := deriveKeys(k, h.salt, h.argon)
	if err != nil {
		return nil, nil, err
	}
	if !hmac.Equal(ks.check, h.check) {
		return nil, nil, fmt.Errorf("%w: the key from %s does not open this vault", ErrWrongKey, k.source)
	}
	aead, err := newAEAD(ks.enc)
	if err != nil {
		return nil, nil, err
	}
	payload, err := aead.Open(nil, h.nonce, data[h.length:], data[:h.length])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: the encrypted contents fail authentication (the key is right)", ErrIntegrity)
	}
	return ks, payload, nil
}

// entry is one secret, or a tombstone that remembers the version of a
// deleted secret so that a new value set under the same name gets a higher
// version (watchers compare versions).
type entry struct {
	version uint64
	updated time.Time
	deleted bool
	value   []byte
}

const flagDeleted = 1

// encodePayload writes the entries sorted by name:
//
//	count uvarint, then per entry: flags u8, name length uvarint, name,
//	version uvarint, updated unix nanoseconds varint, value length uvarint, value
func encodePayload(names []string, entries map[string]*entry) []byte {
	size := binary.MaxVarintLen64
	for _, n := range names {
		size += 1 + 4*binary.MaxVarintLen64 + len(n) + len(entries[n].value)
	}
	b := make([]byte, 0, size)
	b = binary.AppendUvarint(b, uint64(len(names)))
	for _, n := range names {
		e := entries[n]
		var flags byte
		if e.deleted {
			flags = flagDeleted
		}
		b = append(b, flags)
		b = binary.AppendUvarint(b, uint64(len(n)))
		b = append(b, n...)
		b = binary.AppendUvarint(b, e.version)
		b = binary.AppendVarint(b, e.updated.UnixNano())
		b = binary.AppendUvarint(b, uint64(len(e.value)))
		b = append(b, e.value...)
	}
	return b
}

// minRecord is the smallest encoding of one entry.
const minRecord = 5

// decodePayload is the inverse of encodePayload. It checks everything:
// names sorted and unique, valid UTF-8, sizes in bounds, no trailing bytes.
func decodePayload(b []byte) (map[string]*entry, error) {
	r := reader{b: b}
	count := r.uvarint()
	if r.err == nil && count > uint64(len(r.b))/minRecord {
		return nil, fmt.Errorf("entry count %d does not fit in %d bytes", count, len(r.b))
	}
	m := make(map[string]*entry, count)
	prev := ""
	for i := uint64(0); i < count && r.err == nil; i++ {
		flags := r.byte()
		name := string(r.bytes(r.uvarint(), maxNameSize))
		e := &entry{deleted: flags&flagDeleted != 0}
		e.version = r.uvarint()
		e.updated = time.Unix(0, r.varint()).UTC()
		e.value = r.bytes(r.uvarint(), MaxValueSize)
		switch {
		case r.err != nil:
		case flags&^flagDeleted != 0:
			r.fail("entry %d has unknown flags %#x", i, flags)
		case name == "" || !utf8.ValidString(name):
			r.fail("entry %d has an empty or non-UTF-8 name", i)
		case i > 0 && name <= prev:
			r.fail("entry %d is out of order or repeated", i)
		case e.deleted && len(e.value) != 0:
			r.fail("entry %d is deleted but has a value", i)
		case e.version == 0:
			r.fail("entry %d has version 0", i)
		}
		m[name] = e
		prev = name
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d bytes after the last entry", len(r.b))
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

// reader decodes the payload, remembering the first error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, a ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, a...)
	}
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) < 1 {
		r.fail("truncated contents")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad or truncated number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad or truncated number")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n uint64, limit int) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(limit) || n > uint64(len(r.b)) {
		r.fail("length %d exceeds the limit or the data", n)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}
