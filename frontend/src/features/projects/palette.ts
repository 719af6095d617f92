// The server's default colours (server/projects/schemas.py PALETTE), in the same order:
// class i gets PALETTE[i % PALETTE.length] until someone picks another.
export const PALETTE = [
  "#e6194b",
  "#3cb44b",
  "#4363d8",
  "#f58231",
  "#911eb4",
  "#42d4f4",
  "#f032e6",
  "#bfef45",
  "#fabed4",
  "#469990",
  "#dcbeff",
  "#9a6324",
  "#fffac8",
  "#800000",
  "#aaffc3",
  "#808000",
  "#ffd8b1",
  "#000075",
  "#a9a9a9",
  "#ffe119",
] as const;

export function paletteColor(index: number): string {
  return PALETTE[index % PALETTE.length] ?? "#808080";
}
