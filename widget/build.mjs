// Builds the widget from src/ into two files that the server serves as they are:
//
//   src/core.js          -> widget_server/static/widget/widget.js   (/widget.js, on every page)
//   src/overlay/index.js -> widget_server/static/widget/widget-overlay.js
//                                                     (/widget-overlay.<hash>.js, with an offer)
//
// The overlay is built first: its path, with the hash the server computes from its bytes (the
// first 12 hex digits of their SHA-256), is written into the core, which loads it when the first
// offer arrives. The overlay's bytes depend on its own sources only, so a change to the core
// alone leaves its URL (and the browsers' cached copies) as they were.
//
// The core starts with a comment recording the hash of all the inputs (`src:<sha256>`, see
// sourceHash), which a test compares with widget/: a change without a rebuild fails `make test`.
//
// Usage: node build.mjs [--outdir DIR]    (`make widget` runs `npm ci` and this)

import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const outIndex = process.argv.indexOf("--outdir");
const outdir =
  outIndex > 0 ? process.argv[outIndex + 1] : join(here, "..", "widget_server", "static", "widget");
// What the built files depend on besides src/: the build itself and the pinned esbuild.
const CONFIG_FILES = ["build.mjs", "package.json", "package-lock.json"];
const DIGEST_LENGTH = 12; // as widget_server/realtime/widget_asset.py

const sha256 = (data) => createHash("sha256").update(data).digest("hex");

const sourceFiles = (dir = "src") =>
  readdirSync(join(here, dir), { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory() ? sourceFiles(`${dir}/${entry.name}`) : [`${dir}/${entry.name}`]
  );

/**
 * The hash of the inputs: SHA-256 of one line "<sha256 of the file>  <path>\n" per file (the
 * format of sha256sum), paths relative to widget/ with "/", sorted.
 */
const sourceHash = () =>
  sha256(
    [...sourceFiles(), ...CONFIG_FILES]
      .sort()
      .map((path) => `${sha256(readFileSync(join(here, path)))}  ${path}\n`)
      .join("")
  );

const bundle = async (entry, banner, define = {}) => {
  const result = await build({
    entryPoints: [join(here, entry)],
    bundle: true,
    format: "iife",
    target: "es2020",
    minify: true,
    // Property names ending in "_" are the widget's own (internal objects): shortened too.
    mangleProps: /_$/,
    legalComments: "none",
    banner: { js: banner },
    define,
    write: false,
    logLevel: "warning",
  });
  return Buffer.from(result.outputFiles[0].contents);
};

const hash = sourceHash();
const overlay = await bundle("src/overlay/index.js", "/* exit-widget overlay */");
const overlayPath = `/widget-overlay.${sha256(overlay).slice(0, DIGEST_LENGTH)}.js`;
const core = await bundle("src/core.js", `/* exit-widget src:${hash} */`, {
  OVERLAY_PATH: JSON.stringify(overlayPath),
});

mkdirSync(outdir, { recursive: true });
for (const [name, body] of [
  ["widget.js", core],
  ["widget-overlay.js", overlay],
]) {
  writeFileSync(join(outdir, name), body);
  // About what the server sends: its zlib may differ by a few bytes. tests/realtime/test_widget_asset.py
  // checks the size budgets on the server's own gzip.
  const gzipped = gzipSync(body, { level: 9 }).length;
  console.log(`${name.padEnd(18)} ${String(body.length).padStart(6)} B, ~${gzipped} B gzipped`);
}
console.log(`overlay served at ${overlayPath}`);
