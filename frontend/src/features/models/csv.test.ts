import { describe, expect, it } from "vitest";
import { boxesCsv, boxRow, CSV_COLUMNS, quoteCell, textCell } from "./csv";

// A tiny RFC 4180 reader, to check that what we write reads back cell for cell.
function parse(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      row.push(cell);
      cell = "";
    } else if (c === "\r" && text[i + 1] === "\n") {
      row.push(cell);
      rows.push(row);
      row = [];
      cell = "";
      i++;
    } else cell += c;
  }
  expect(cell).toBe(""); // the file ends with a line end
  return rows;
}

const box = { className: "dog", confidence: 0.876543, x: 0.25, y: 0.5, w: 0.5, h: 0.25 };

describe("the predictions CSV", () => {
  it("has the server export's header, then one row per box, CRLF", () => {
    const text = boxesCsv([
      { file: "a.png", width: 200, height: 100, boxes: [box, { ...box, className: "cat", confidence: 0.3 }] },
      { file: "empty.png", width: 10, height: 10, boxes: [] },
    ]);
    expect(text.split("\r\n")[0]).toBe("file,class,confidence,x,y,w,h,x_px,y_px,w_px,h_px");
    expect(parse(text)).toEqual([
      [...CSV_COLUMNS],
      ["a.png", "dog", "0.8765", "0.250000", "0.500000", "0.500000", "0.250000", "50.0", "50.0", "100.0", "25.0"],
      ["a.png", "cat", "0.3000", "0.250000", "0.500000", "0.500000", "0.250000", "50.0", "50.0", "100.0", "25.0"],
    ]);
  });

  it("quotes commas, quotes and line breaks in file names, and reads back whole", () => {
    const names = ['say "cheese".png', "a,b.png", "two\nlines.png", "cr\r.png", "plain.png"];
    const text = boxesCsv(names.map((file) => ({ file, width: 1, height: 1, boxes: [box] })));
    expect(parse(text).slice(1).map((row) => row[0])).toEqual(names);
    expect(text).toContain('"say ""cheese"".png"');
    expect(text).toContain("\r\nplain.png,dog,");
    expect(quoteCell("a,b")).toBe('"a,b"');
    expect(quoteCell("ok")).toBe("ok");
  });

  it("keeps names that look like formulas as text", () => {
    for (const start of ["=", "+", "-", "@", "\t", "\r"]) {
      expect(textCell(`${start}cmd|' /C calc'!A0`)).toBe(`'${start}cmd|' /C calc'!A0`);
    }
    expect(textCell("a=b")).toBe("a=b");
    const row = boxRow("=HYPERLINK(\"http://x\",\"y\").png", 10, 10, { ...box, className: "@class" });
    expect(row.slice(0, 2)).toEqual(['\'=HYPERLINK("http://x","y").png', "'@class"]);
    const text = boxesCsv([{ file: "-1+2.png", width: 1, height: 1, boxes: [box] }]);
    expect(parse(text)[1]?.[0]).toBe("'-1+2.png");
  });

  it("leaves the confidence empty for a box without one", () => {
    expect(boxRow("a.png", 4, 4, { ...box, confidence: null })[2]).toBe("");
  });
});
