// Package nfpm pins nfpm, the tool scripts/package.sh builds the .deb and
// .rpm packages with.
//
// It is a separate module so that nfpm's dependencies stay out of the main
// module; scripts/tools/nfpm.sh builds the binary from here.
package nfpm
