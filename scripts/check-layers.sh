#!/usr/bin/env bash
# Reads every `crate::` path in src/ (outside the `#[cfg(test)] mod tests` at the end of a file: unit
# tests may put two layers together, e.g. the store and the limiter on one Redis) and fails when the folders (top-level modules) import each other in
# a circle, or when a folder imports one of a higher layer. The layers, top to bottom, are the ones
# docs/architecture.md draws; a folder may import its own layer (without a circle) and any layer below.
#
#   scripts/check-layers.sh          check, print nothing but problems
#   scripts/check-layers.sh --edges  also print every edge `from -> to  (files)`
#
# Needs only bash and perl (perl-base is part of every Debian system).
set -euo pipefail
cd "$(dirname "$0")/.."

LAYERS='
main lib reload import
admin
proxy
oauth auth limits metrics
policy store
token redis server error html
config http_util secrets logging clock
'

perl - "$LAYERS" "${1:-}" $(find src -name '*.rs' | sort) <<'PERL'
use strict; use warnings;
my ($layers, $mode, @files) = @ARGV;
my (%rank, $n);
for my $line (grep { /\S/ } split /\n/, $layers) { $n++; $rank{$_} = $n for split ' ', $line; }
my %edges;   # "from to" => { file => 1 }
for my $f (@files) {
  open my $h, '<', $f or die "$f: $!"; local $/; my $src = <$h>; close $h;
  $src =~ s{\n#\[cfg\(test\)\]\s*\n\s*mod tests \{.*\z}{}s;   # unit tests may test layers together
  $src =~ s{//[^\n]*}{}g;                       # comments and doc comments name modules too
  $src =~ s{"(?:\\.|[^"\\])*"}{""}gs;           # so do strings
  (my $rel = $f) =~ s{^src/}{};
  my $from = $rel =~ m{^([^/]+)/} ? $1 : ($rel =~ s/\.rs$//r);
  my %to;
  while ($src =~ /crate::\{([^;]*?)\}\s*;/gs) {  # use crate::{a::b, c};
    for my $p (split /,/, $1) { $to{$1} = 1 if $p =~ /^\s*(\w+)/; }
  }
  $to{$1} = 1 while $src =~ /crate::(\w+)/g;
  for my $t (keys %to) {
    next if $t eq $from || !exists $rank{$t};    # macros exported at the crate root are not folders
    die "$rel: folder '$from' is in no layer of scripts/check-layers.sh\n" unless exists $rank{$from};
    $edges{"$from $t"}{$rel} = 1;
  }
}
my $bad = 0;
for my $e (sort keys %edges) {
  my ($a, $b) = split ' ', $e;
  my $files = join ', ', sort keys %{$edges{$e}};
  print "$a -> $b  ($files)\n" if $mode eq '--edges';
  if ($rank{$b} < $rank{$a}) { print "UPWARD: $a imports $b, a higher layer ($files)\n"; $bad = 1; }
}
# A circle within a layer: depth-first search over the same-layer edges.
my %out; for my $e (keys %edges) { my ($a, $b) = split ' ', $e; push @{$out{$a}}, $b; }
my %state;
sub visit { my ($v, @path) = @_;
  return if ($state{$v} // 0) == 2;
  if (($state{$v} // 0) == 1) { my @c = (@path[(grep { $path[$_] eq $v } 0..$#path)[0] .. $#path], $v);
    print "CIRCLE: ", join(' -> ', @c), "\n"; $bad = 1; return; }
  $state{$v} = 1; visit($_, @path, $v) for sort @{$out{$v} // []}; $state{$v} = 2; }
visit($_) for sort keys %out;
exit $bad;
PERL
