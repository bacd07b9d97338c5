// abcjs's parser warnings for each tune of ABC text on stdin, as JSON on stdout:
//     [{"x": "1", "warnings": ["Music Line:6:1: Missing the closing quote ..."]}, ...]
// Tunes start at lines beginning "X:" (text before the first one is ignored; text with no
// X: line at all is one tune). abcjs.parseOnly needs no DOM, so this runs under plain node.
//     node bench/abcjs/warnings.mjs < tunes.abc
import { readFileSync } from "node:fs";
import abcjs from "abcjs";

function splitTunes(text) {
  const tunes = [];
  let current = null;
  for (const line of text.replace(/\r\n?/g, "\n").split("\n")) {
    if (line.startsWith("X:")) {
      if (current !== null) tunes.push(current.join("\n"));
      current = [line];
    } else if (current !== null) {
      current.push(line);
    }
  }
  if (current !== null) tunes.push(current.join("\n"));
  if (tunes.length === 0 && text.trim() !== "") tunes.push(text);
  return tunes;
}

// abcjs marks the offending character with HTML for its editor; keep the plain text.
function plain(warning) {
  return String(warning).replace(/<[^>]*>/g, "").replace(/&nbsp;/g, " ").trim();
}

function tuneWarnings(tune) {
  const parsed = abcjs.parseOnly(tune + "\n");
  return parsed.flatMap((each) => (each.warnings || []).map(plain));
}

const tunes = splitTunes(readFileSync(0, "utf8"));
const report = tunes.map((tune) => ({
  x: (tune.match(/^X:\s*(\S*)/) || ["", ""])[1],
  warnings: tuneWarnings(tune),
}));
process.stdout.write(JSON.stringify(report) + "\n");
