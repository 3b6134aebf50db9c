// Validates AsyncAPI documents with the official parser (@asyncapi/parser): the same
// JSON Schema checks of the specification and the same semantic rules (Spectral) that
// AsyncAPI's own tools apply. Usage: node validate.mjs [--strict] [--verbose] FILE...
// Prints each error and warning (with --verbose also infos and hints) as
// `FILE:LINE:COLUMN: SEVERITY: MESSAGE (RULE) at PATH`; exits 1 when a document has an
// error (with --strict: an error or a warning), 2 on bad usage.
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { Parser, fromFile } from "@asyncapi/parser";

const SEVERITY = ["error", "warning", "info", "hint"];

const args = process.argv.slice(2);
const strict = args.includes("--strict");
const verbose = args.includes("--verbose");
const files = args.filter((a) => a !== "--strict" && a !== "--verbose");
if (files.length === 0) {
  console.error("usage: asyncapi-validate [--strict] [--verbose] FILE...");
  process.exit(2);
}

const parser = new Parser();
let failed = false;
for (const file of files) {
  try {
    await readFile(file);
  } catch (error) {
    console.error(`error: ${file}: cannot read: ${error.code ?? error.message}`);
    failed = true;
    continue;
  }
  const { document, diagnostics } = await fromFile(parser, resolve(file)).parse();
  let bad = document === undefined;
  for (const d of diagnostics) {
    const severity = SEVERITY[d.severity] ?? String(d.severity);
    if (d.severity === 0 || (strict && d.severity === 1)) bad = true;
    if (d.severity > 1 && !verbose) continue;
    const at = d.range ? `${d.range.start.line + 1}:${d.range.start.character + 1}` : "1:1";
    const path = d.path && d.path.length ? ` at ${d.path.join(".")}` : "";
    const message = String(d.message).replace(/\s+/g, " ");
    console.error(`${file}:${at}: ${severity}: ${message} (${d.code})${path}`);
  }
  if (bad) {
    failed = true;
    console.error(`error: ${file}: not a valid AsyncAPI document`);
  } else {
    console.log(`${file}: valid AsyncAPI ${document.version()}`);
  }
}
process.exit(failed ? 1 : 0);
