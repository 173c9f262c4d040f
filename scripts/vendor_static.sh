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

SWAGGER="$NM/swagger-ui-dist"
for f in "$NM/htmx.org/dist/htmx.min.js" \
         "$NM/uplot/dist/uPlot.iife.min.js" \
         "$NM/uplot/dist/uPlot.min.css" \
         "$SWAGGER/swagger-ui-bundle.js" \
         "$SWAGGER/swagger-ui.css" \
         "$SWAGGER/LICENSE" \
         "$SWAGGER/NOTICE"; do
  [ -f "$f" ] || { echo "missing $f (run: npm ci)" >&2; exit 1; }
done

mkdir -p "$DEST"
cp "$NM/htmx.org/dist/htmx.min.js"     "$DEST/htmx.min.js"
cp "$NM/uplot/dist/uPlot.iife.min.js"  "$DEST/uPlot.iife.min.js"
cp "$NM/uplot/dist/uPlot.min.css"      "$DEST/uPlot.min.css"
# Swagger UI for /api/v1/docs (served from here, never a CDN). The source-map comments go:
# the maps are not vendored, and collectstatic's manifest would refuse a reference to a missing file.
mkdir -p "$DEST/swagger-ui"
sed -e 's#//\# sourceMappingURL=.*##' "$SWAGGER/swagger-ui-bundle.js" > "$DEST/swagger-ui/swagger-ui-bundle.js"
sed -e 's#/\*\# sourceMappingURL=[^*]*\*/##' "$SWAGGER/swagger-ui.css" > "$DEST/swagger-ui/swagger-ui.css"
cp "$SWAGGER/LICENSE" "$SWAGGER/NOTICE" "$DEST/swagger-ui/"

ver() { node -p "require('./$NM/$1/package.json').version"; }
HTMX_V=$(ver htmx.org)
UPLOT_V=$(ver uplot)
SWAGGER_V=$(ver swagger-ui-dist)

cat > "$DEST/VERSIONS.txt" <<TXT
Vendored front-end libraries (copied by scripts/vendor_static.sh from npm; pinned in package.json)

htmx.org $HTMX_V  (0BSD)  https://github.com/bigskysoftware/htmx
  htmx.min.js          <- node_modules/htmx.org/dist/htmx.min.js
uplot    $UPLOT_V  (MIT)   https://github.com/leeoniya/uPlot
  uPlot.iife.min.js    <- node_modules/uplot/dist/uPlot.iife.min.js
  uPlot.min.css        <- node_modules/uplot/dist/uPlot.min.css
swagger-ui-dist $SWAGGER_V  (Apache-2.0)  https://github.com/swagger-api/swagger-ui
  swagger-ui/swagger-ui-bundle.js  <- node_modules/swagger-ui-dist/swagger-ui-bundle.js (source-map comment removed)
  swagger-ui/swagger-ui.css        <- node_modules/swagger-ui-dist/swagger-ui.css (source-map comment removed)
  swagger-ui/LICENSE, NOTICE       <- node_modules/swagger-ui-dist/

sha256:
$(cd "$DEST" && sha256sum htmx.min.js uPlot.iife.min.js uPlot.min.css swagger-ui/swagger-ui-bundle.js swagger-ui/swagger-ui.css)
TXT
echo "vendored htmx.org $HTMX_V, uplot $UPLOT_V, swagger-ui-dist $SWAGGER_V into $DEST/"
