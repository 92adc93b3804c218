package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrInvalid is wrapped by every error about the content of dso.yaml.
var ErrInvalid = errors.New("invalid configuration")

// ErrNoFile is wrapped when no configuration file can be found or read.
var ErrNoFile = errors.New("no dso.yaml found")

// Problem is one thing wrong in a file, at a position.
type Problem struct {
	File   string
	Line   int    // 1-based
	Column int    // 1-based
	Path   string // where in the document, such as "secrets[0].provider"; may be empty
	Msg    string
}

func (p Problem) String() string {
	if p.Path == "" {
		return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Column, p.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s: %s", p.File, p.Line, p.Column, p.Path, p.Msg)
}

// ValidationError lists every problem found in one file, in file order.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	n := len(e.Problems)
	if n == 1 {
		b.WriteString("invalid configuration (1 problem):")
	} else {
		fmt.Fprintf(&b, "invalid configuration (%d problems):", n)
	}
	for _, p := range e.Problems {
		b.WriteString("\n")
		b.WriteString(p.String())
	}
	return b.String()
}

// Unwrap lets callers test errors.Is(err, ErrInvalid).
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Positions returns err as the agent may log and publish it: a
// ValidationError keeps the file, the positions and the key paths of its
// problems, but not their messages, which quote what the file says (an
// unknown key, a bad value). Other errors are returned as they are.
func Positions(err error) error {
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) == 0 {
		return err
	}
	where := make([]string, 0, len(ve.Problems))
	for i, p := range ve.Problems {
		if i == 5 {
			where = append(where, fmt.Sprintf("and %d more", len(ve.Problems)-i))
			break
		}
		w := fmt.Sprintf("line %d column %d", p.Line, p.Column)
		if p.Path != "" && len(p.Path) <= 64 {
			w += " (" + p.Path + ")"
		}
		where = append(where, w)
	}
	return fmt.Errorf("%w: %s has %d problems, at %s; `docker dso config validate -c %s` shows them", ErrInvalid, ve.Problems[0].File, len(ve.Problems), strings.Join(where, ", "), ve.Problems[0].File)
}

// problems collects problems for one file.
type problems struct {
	file string
	list []Problem
}

func (ps *problems) add(line, col int, path, format string, args ...any) {
	if line < 1 {
		line = 1
	}
	if col < 1 {
		col = 1
	}
	ps.list = append(ps.list, Problem{File: ps.file, Line: line, Column: col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (ps *problems) addAt(p pos, path, format string, args ...any) {
	ps.add(p.line, p.col, path, format, args...)
}

// scrub replaces each of values in every problem by "<redacted>".
func (ps *problems) scrub(values []string) {
	for i := range ps.list {
		for _, v := range values {
			ps.list[i].Msg = strings.ReplaceAll(ps.list[i].Msg, v, "<redacted>")
			ps.list[i].Path = strings.ReplaceAll(ps.list[i].Path, v, "<redacted>")
		}
	}
}

// err returns nil when nothing was found.
func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	sort.SliceStable(ps.list, func(i, j int) bool {
		a, b := ps.list[i], ps.list[j]
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	if len(ps.list) > maxProblems {
		next := ps.list[maxProblems]
		rest := len(ps.list) - maxProblems
		ps.list = append(ps.list[:maxProblems:maxProblems], Problem{File: ps.file, Line: next.Line, Column: next.Column,
			Msg: fmt.Sprintf("%d more problems not shown; fix the ones above first", rest)})
	}
	return &ValidationError{Problems: ps.list}
}

// maxProblems bounds the list, for files that are not dso.yaml at all.
const maxProblems = 100

// suggest returns " (did you mean "x"?)" when one candidate is close to word.
func suggest(word string, candidates []string) string {
	best, bestDist := "", -1
	for _, c := range candidates {
		d := editDistance(strings.ToLower(word), strings.ToLower(c))
		if bestDist < 0 || d < bestDist {
			best, bestDist = c, d
		}
	}
	if bestDist < 0 || bestDist == 0 && best == word {
		return ""
	}
	limit := 2
	if l := len(word) / 3; l > limit {
		limit = l
	}
	if bestDist > limit {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// oneOf formats a list of accepted values: "a, b or c".
func oneOf(vals []string) string {
	switch len(vals) {
	case 0:
		return "(none)"
	case 1:
		return vals[0]
	}
	return strings.Join(vals[:len(vals)-1], ", ") + " or " + vals[len(vals)-1]
}
