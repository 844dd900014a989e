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

status=0
perl - "$LAYERS" "${1:-}" $(find src -name '*.rs' | sort) <<'PERL' || status=1
use strict; use warnings;
my ($layers, $mode, @files) = @ARGV;
my (%rank, $n);
for my $line (grep { /\S/ } split /\n/, $layers) { $n++; $rank{$_} = $n for split ' ', $line; }
my %edges;   # "from to" => { file => 1 }
# Files that are whole test modules (`#[cfg(test)] mod tests;`, `mod contract;`) are unit tests too.
my %test_file;
for my $f (@files) {
  open my $h, '<', $f or die "$f: $!"; local $/; my $src = <$h>; close $h;
  (my $dir = $f) =~ s{(?:/mod)?\.rs$}{}; $dir =~ s{/[^/]+$}{} unless $f =~ m{/mod\.rs$} || $f eq 'src/lib.rs';
  $dir = 'src' if $f eq 'src/lib.rs';
  $test_file{"$dir/$1.rs"} = 1 while $src =~ /#\[cfg\(test\)\]\s*(?:pub(?:\(crate\))? )?mod (\w+);/g;
}
@files = grep { !$test_file{$_} } @files;
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

# Within a folder: files may use each other (and their `mod.rs`) but never in a circle. A `mod.rs`
# declaring and re-exporting its children is the folder's table of contents, not an edge.
perl - $(find src -name '*.rs' | sort) <<'PERL' || status=1
use strict; use warnings;
my %edges; my %files;
for my $f (@ARGV) {
  next unless $f =~ m{^src/(.+)/([^/]+)\.rs$};
  my ($dir, $name) = ($1, $2);
  next if $name eq 'mod';
  $files{$dir}{$name} = 1;
}
for my $f (@ARGV) {
  next unless $f =~ m{^src/(.+)/([^/]+)\.rs$};
  my ($dir, $name) = ($1, $2);
  next if $name eq 'mod';
  open my $h, '<', $f or die; local $/; my $src = <$h>; close $h;
  $src =~ s{\n#\[cfg\(test\)\]\s*\n\s*mod tests \{.*\z}{}s;
  $src =~ s{//[^\n]*}{}g; $src =~ s{"(?:\\.|[^"\\])*"}{""}gs;
  (my $cdir = $dir) =~ s{/}{::}g;
  my %to;
  while ($src =~ /super::\{([^;]*?)\}\s*;/gs) { for my $p (split /,/, $1) { $to{$1}=1 if $p =~ /^\s*(\w+)/; } }
  $to{$1} = 1 while $src =~ /super::(\w+)/g;
  while ($src =~ /crate::\Q$cdir\E::\{([^;]*?)\}\s*;/gs) { for my $p (split /,/, $1) { $to{$1}=1 if $p =~ /^\s*(\w+)/; } }
  $to{$1} = 1 while $src =~ /crate::\Q$cdir\E::(\w+)/g;
  for my $t (keys %to) { next if $t eq $name || !$files{$dir}{$t}; $edges{$dir}{$name}{$t} = 1; }
}
my $bad = 0;
for my $dir (sort keys %edges) {
  my %state; my $out = $edges{$dir};
  my $visit; $visit = sub { my ($v, @path) = @_;
    my $s = $state{$v} // 0; return if $s == 2;
    if ($s == 1) { my ($i) = grep { $path[$_] eq $v } 0..$#path; print "CIRCLE in src/$dir/: ", join(' -> ', @path[$i..$#path], $v), "\n"; $bad = 1; return; }
    $state{$v} = 1; $visit->($_, @path, $v) for sort keys %{$out->{$v} // {}}; $state{$v} = 2; };
  $visit->($_) for sort keys %$out;
}
exit $bad;
PERL
exit $status
