package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Blobs keeps large message bodies, each immutable and named by the hex
// SHA-256 of its bytes. Small bodies live inside the database instead. It
// is an interface so an object store can back it later.
type Blobs interface {
	// Put stores r under hash; when it returns nil the bytes are durable.
	// Putting a hash that exists again is harmless.
	Put(hash string, r io.Reader) error
	// Get opens the whole body.
	Get(hash string) (io.ReadCloser, error)
	// Range opens n bytes from offset off (fewer at the end).
	Range(hash string, off, n int64) (io.ReadCloser, error)
	// Delete removes a body; a missing one is not an error.
	Delete(hash string) error
	// Exists reports whether hash is stored.
	Exists(hash string) (bool, error)
}

// fileBlobs stores bodies as files dir/ab/abcdef... .
type fileBlobs struct {
	dir string
}

func newFileBlobs(dir string) (*fileBlobs, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, err
	}
	return &fileBlobs{dir: dir}, nil
}

func validHash(hash string) bool {
	if len(hash) != 64 {
		return false
	}
	_, err := hex.DecodeString(hash)
	return err == nil && strings.ToLower(hash) == hash
}

func (b *fileBlobs) path(hash string) string {
	return filepath.Join(b.dir, hash[:2], hash)
}

// Put writes to a temporary file, syncs it, renames it into place and
// syncs the directory, so a crash leaves either nothing or the whole file.
func (b *fileBlobs) Put(hash string, r io.Reader) error {
	if !validHash(hash) {
		return fmt.Errorf("put blob: %w: bad hash", ErrInvalid)
	}
	dst := b.path(hash)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return fmt.Errorf("put blob: %w", err)
	}
	f, err := os.CreateTemp(filepath.Join(b.dir, "tmp"), "put-*")
	if err != nil {
		return fmt.Errorf("put blob: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // harmless after rename
	h := sha256.New()
	_, err = io.Copy(f, io.TeeReader(r, h))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("put blob: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != hash {
		return fmt.Errorf("put blob: %w: content hash %s is not %s", ErrInvalid, got, hash)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("put blob: %w", err)
	}
	return syncDir(filepath.Dir(dst))
}

func (b *fileBlobs) Get(hash string) (io.ReadCloser, error) {
	if !validHash(hash) {
		return nil, fmt.Errorf("get blob: %w", ErrNotFound)
	}
	f, err := os.Open(b.path(hash))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("get blob %s: %w", hash, ErrNotFound)
	}
	return f, err
}

func (b *fileBlobs) Range(hash string, off, n int64) (io.ReadCloser, error) {
	rc, err := b.Get(hash)
	if err != nil {
		return nil, err
	}
	f := rc.(*os.File)
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, off, n), f}, nil
}

func (b *fileBlobs) Delete(hash string) error {
	if !validHash(hash) {
		return nil
	}
	err := os.Remove(b.path(hash))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (b *fileBlobs) Exists(hash string) (bool, error) {
	if !validHash(hash) {
		return false, nil
	}
	_, err := os.Stat(b.path(hash))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// walk calls fn with the hash of every stored file and removes leftover
// temporary files.
func (b *fileBlobs) walk(fn func(hash string) error) error {
	tmps, _ := os.ReadDir(filepath.Join(b.dir, "tmp"))
	for _, t := range tmps {
		os.Remove(filepath.Join(b.dir, "tmp", t.Name()))
	}
	dirs, err := os.ReadDir(b.dir)
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if !d.IsDir() || len(d.Name()) != 2 {
			continue
		}
		files, err := os.ReadDir(filepath.Join(b.dir, d.Name()))
		if err != nil {
			return err
		}
		for _, f := range files {
			if validHash(f.Name()) {
				if err := fn(f.Name()); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func hashBytes(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// dropUnreferencedBlobs deletes blobs no message refers to any more. Their
// files are removed after the commit, and only if no blob row for the same
// hash came back in the meantime (a new delivery of the same bytes).
func (st *Store) dropUnreferencedBlobs(tx *txn) error {
	rows, err := tx.Query(`SELECT b.id, b.hash, b.data IS NULL, u.blob_id IS NOT NULL
		FROM blobs b LEFT JOIN unindexed u ON u.blob_id = b.id WHERE b.refs <= 0`)
	if err != nil {
		return err
	}
	type dead struct {
		id        int64
		hash      []byte
		isFile    bool
		unindexed bool
	}
	var list []dead
	for rows.Next() {
		var d dead
		if err := rows.Scan(&d.id, &d.hash, &d.isFile, &d.unindexed); err != nil {
			rows.Close()
			return err
		}
		list = append(list, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, d := range list {
		q := "DELETE FROM blob_text WHERE rowid = ?"
		if d.unindexed {
			q = "DELETE FROM unindexed WHERE blob_id = ?"
		}
		if _, err := tx.Exec(q, d.id); err != nil {
			return err
		}
		if _, err := tx.Exec("DELETE FROM blobs WHERE id = ?", d.id); err != nil {
			return err
		}
		if d.isFile {
			hash := d.hash
			tx.afterCommit(func() { st.removeBlobFile(hash) })
		}
	}
	return nil
}

// removeBlobFile runs in the writer goroutine after a commit, so no
// delivery transaction can interleave between the check and the removal.
func (st *Store) removeBlobFile(hash []byte) {
	var n int
	if err := st.writer.QueryRow("SELECT count(*) FROM blobs WHERE hash = ?", hash).Scan(&n); err != nil {
		st.log.Warn("check blob before removal", "err", err)
		return
	}
	if n > 0 {
		return
	}
	if err := st.blobs.Delete(hex.EncodeToString(hash)); err != nil {
		st.log.Warn("remove blob file", "err", err)
	}
}

// sweepBlobs removes files that no blob row references: bodies written
// for a delivery whose transaction never committed, or whose removal was
// cut short by a crash. It runs once at Open, through the writer so it
// cannot race a delivery.
func (st *Store) sweepBlobs(ctx context.Context) error {
	fb, ok := st.blobs.(*fileBlobs)
	if !ok {
		return nil
	}
	return st.write(ctx, func(tx *txn) error {
		return fb.walk(func(hash string) error {
			raw, _ := hex.DecodeString(hash)
			var n int
			if err := tx.QueryRow("SELECT count(*) FROM blobs WHERE hash = ? AND data IS NULL", raw).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				st.log.Info("remove unreferenced blob file", "hash", hash)
				return fb.Delete(hash)
			}
			return nil
		})
	})
}
