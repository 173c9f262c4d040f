#!/bin/sh
# Re-copy vendored front-end files from node_modules into static/vendor/.
#
#   npm ci && sh scripts/vendor_static.sh      (or: npm ci && npm run vendor)
#
# Only needed when bumping a version in package.json. The copied files are
# committed; nothing reads node_modules at runtime and no CDN is used.
set -eu
cd "$(dirname "$0")/.."

NM=node_modules
DEST=static/vendor

for f in "$NM/htmx.org/dist/htmx.min.js" \
         "$NM/uplot/dist/uPlot.iife.min.js" \
         "$NM/uplot/dist/uPlot.min.css"; do
  [ -f "$f" ] || { echo "missing $f (run: npm ci)" >&2; exit 1; }
done

mkdir -p "$DEST"
cp "$NM/htmx.org/dist/htmx.min.js"     "$DEST/htmx.min.js"
cp "$NM/uplot/dist/uPlot.iife.min.js"  "$DEST/uPlot.iife.min.js"
cp "$NM/uplot/dist/uPlot.min.css"      "$DEST/uPlot.min.css"

ver() { node -p "require('./$NM/$1/package.json').version"; }
HTMX_V=$(ver htmx.org)
UPLOT_V=$(ver uplot)

cat > "$DEST/VERSIONS.txt" <<TXT
Vendored front-end libraries (copied by scripts/vendor_static.sh from npm; pinned in package.json)

htmx.org $HTMX_V  (0BSD)  https://github.com/bigskysoftware/htmx
  htmx.min.js          <- node_modules/htmx.org/dist/htmx.min.js
uplot    $UPLOT_V  (MIT)   https://github.com/leeoniya/uPlot
  uPlot.iife.min.js    <- node_modules/uplot/dist/uPlot.iife.min.js
  uPlot.min.css        <- node_modules/uplot/dist/uPlot.min.css

sha256:
$(cd "$DEST" && sha256sum htmx.min.js uPlot.iife.min.js uPlot.min.css)
TXT
echo "vendored htmx.org $HTMX_V, uplot $UPLOT_V into $DEST/"
