// The predict playground's results as CSV, built in the browser. The columns, their
// order and the number formats are the server's export format `csv`
// (server/datasets/csvformat.py): one row per box, so the two files can be compared.

export const CSV_COLUMNS = ["file", "class", "confidence", "x", "y", "w", "h", "x_px", "y_px", "w_px", "h_px"] as const;

// Excel, LibreOffice and Google Sheets run a cell that starts with one of these as a
// formula (CSV injection); file and class names come from users.
const FORMULA_START = /^[=+\-@\t\r]/;

/** A user-supplied text cell that a spreadsheet shows as text, never evaluates. */
export function textCell(value: string): string {
  return FORMULA_START.test(value) ? `'${value}` : value;
}

/** RFC 4180: a cell with a comma, a quote or a line break is quoted, quotes doubled. */
export function quoteCell(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

export interface CsvBox {
  className: string;
  confidence: number | null;
  /** Top-left corner and size, normalised to the image. */
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface CsvImage {
  file: string;
  width: number;
  height: number;
  boxes: readonly CsvBox[];
}

export function boxRow(file: string, width: number, height: number, box: CsvBox): string[] {
  return [
    textCell(file),
    textCell(box.className),
    box.confidence === null ? "" : box.confidence.toFixed(4),
    box.x.toFixed(6),
    box.y.toFixed(6),
    box.w.toFixed(6),
    box.h.toFixed(6),
    (box.x * width).toFixed(1),
    (box.y * height).toFixed(1),
    (box.w * width).toFixed(1),
    (box.h * height).toFixed(1),
  ];
}

/** The header and one row per box, CRLF line ends (as Python's csv module writes). */
export function boxesCsv(images: readonly CsvImage[]): string {
  const lines = [CSV_COLUMNS.join(",")];
  for (const image of images) {
    for (const box of image.boxes) {
      lines.push(boxRow(image.file, image.width, image.height, box).map(quoteCell).join(","));
    }
  }
  return `${lines.join("\r\n")}\r\n`;
}
