// Syntax check for the test-machine kit's PowerShell scripts, on Linux where PowerShell itself
// is not available: each file is parsed with tree-sitter's PowerShell grammar (WebAssembly, no
// native build), and any ERROR or missing node is reported as file:line:column. This is a
// grammar, not PowerShell's own parser: it catches unbalanced braces, broken strings and
// malformed statements, not every construct PowerShell would reject, and it rejects a few
// valid ones (bare comma lists as command arguments: write `-Property @('a', 'b')`, and
// one-line `switch` clauses). Usage: node check-syntax.mjs FILE.ps1...
import fs from 'node:fs';
import { Parser, Language } from 'web-tree-sitter';

await Parser.init();
const grammar = new URL('./node_modules/tree-sitter-powershell/tree-sitter-powershell.wasm', import.meta.url);
const parser = new Parser();
parser.setLanguage(await Language.load(fs.readFileSync(grammar)));

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node check-syntax.mjs FILE.ps1...');
  process.exit(2);
}
let failed = 0;
for (const file of files) {
  const tree = parser.parse(fs.readFileSync(file, 'utf8'));
  const errors = [];
  const walk = (node) => {
    if (node.type === 'ERROR' || node.isMissing) errors.push(node);
    for (const child of node.children) walk(child);
  };
  walk(tree.rootNode);
  for (const e of errors) {
    const what = e.isMissing ? `missing ${e.type}` : `syntax error near ${JSON.stringify(e.text.slice(0, 60))}`;
    console.log(`${file}:${e.startPosition.row + 1}:${e.startPosition.column + 1}: ${what}`);
  }
  if (errors.length > 0) failed++;
  else console.log(`${file}: parses`);
}
process.exit(failed > 0 ? 1 : 0);
