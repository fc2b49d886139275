// Package fieldcheck holds the field rules shared by the Validate methods of the chat API
// messages. The rules are part of the contract: each proto field's comment states its limits.
package fieldcheck

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// ID checks an identifier: min..max characters of printable ASCII other than space, '{' and
// '}'. Ids go into Redis keys inside hash tags, which braces would break.
func ID(field, v string, minLen, maxLen int) error {
	if len(v) < minLen || len(v) > maxLen {
		return fmt.Errorf("%s: must be %d..%d characters, got %d", field, minLen, maxLen, len(v))
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c > '~' || c == '{' || c == '}' {
			return fmt.Errorf("%s: must be printable ASCII without spaces or braces (byte %d is 0x%02x)", field, i, c)
		}
	}
	return nil
}

// Chars checks that v has min..max Unicode characters (code points).
func Chars(field, v string, minLen, maxLen int) error {
	// Strings decoded from protobuf are valid UTF-8; a Go caller may still pass anything.
	if !utf8.ValidString(v) {
		return fmt.Errorf("%s: must be valid UTF-8", field)
	}
	if n := utf8.RuneCountInString(v); n < minLen || n > maxLen {
		return fmt.Errorf("%s: must be %d..%d characters, got %d", field, minLen, maxLen, n)
	}
	return nil
}

// Printable checks that v is min..max characters, each printable (letters, marks, numbers,
// punctuation, symbols and the ASCII space), as room names are.
func Printable(field, v string, minLen, maxLen int) error {
	if err := Chars(field, v, minLen, maxLen); err != nil {
		return err
	}
	for _, r := range v {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%s: character %U is not printable", field, r)
		}
	}
	return nil
}

// Bytes checks that v is min..max bytes long.
func Bytes(field, v string, minLen, maxLen int) error {
	if len(v) < minLen || len(v) > maxLen {
		return fmt.Errorf("%s: must be %d..%d bytes, got %d", field, minLen, maxLen, len(v))
	}
	return nil
}

// Max checks that a number is at most max.
func Max(field string, v, maxV uint64) error {
	if v > maxV {
		return fmt.Errorf("%s: must be at most %d, got %d", field, maxV, v)
	}
	return nil
}

// Username checks a username: 3..32 characters, each an ASCII letter, digit, '_', '-' or '.'.
func Username(field, v string) error {
	if len(v) < 3 || len(v) > 32 {
		return fmt.Errorf("%s: must be 3..32 characters, got %d", field, utf8.RuneCountInString(v))
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("%s: only letters, digits, '_', '-' and '.' are allowed", field)
		}
	}
	return nil
}

// Count checks that a repeated field has min..max elements.
func Count(field string, n, minN, maxN int) error {
	if n < minN || n > maxN {
		return fmt.Errorf("%s: must have %d..%d elements, got %d", field, minN, maxN, n)
	}
	return nil
}

// First returns the first non-nil error.
func First(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
