#!/usr/bin/env bash
# Refresh static/vendor/ from the versions pinned in package.json / package-lock.json (npm registry).
# The dashboard serves these files itself: no page fetches anything from the internet.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --ignore-scripts --no-audit --no-fund --silent
cp node_modules/chart.js/dist/chart.umd.min.js static/vendor/chart.umd.min.js
cp node_modules/chart.js/LICENSE.md static/vendor/chart.js.LICENSE.md
cp node_modules/chartjs-plugin-annotation/dist/chartjs-plugin-annotation.min.js static/vendor/
cp node_modules/chartjs-plugin-annotation/LICENSE.md static/vendor/chartjs-plugin-annotation.LICENSE.md
rm -rf node_modules
