// The ordered class list of a project: pure functions, so the editor only renders.
import { paletteColor } from "./palette";

export interface ClassDraft {
  name: string;
  color: string;
}

export const MAX_CLASS_NAME = 100;

/** Names typed or pasted at once: one per line, or separated by commas. */
export function splitNames(text: string): string[] {
  return text
    .split(/[\n,]/)
    .map((name) => name.trim())
    .filter((name) => name.length > 0);
}

export function addClasses(
  list: ClassDraft[],
  text: string,
): { list: ClassDraft[]; error: string | null } {
  const names = splitNames(text);
  if (names.length === 0) return { list, error: "Type a class name first." };
  const taken = new Set(list.map((c) => c.name.trim().toLowerCase()));
  const next = [...list];
  const skipped: string[] = [];
  for (const name of names) {
    const key = name.toLowerCase();
    if (taken.has(key) || name.length > MAX_CLASS_NAME) {
      skipped.push(name);
      continue;
    }
    taken.add(key);
    next.push({ name, color: paletteColor(next.length) });
  }
  const error = skipped.length
    ? `Not added (already in the list or longer than ${MAX_CLASS_NAME} characters): ${skipped.join(", ")}`
    : null;
  return { list: next, error };
}

export function moveClass(list: ClassDraft[], index: number, delta: -1 | 1): ClassDraft[] {
  const target = index + delta;
  if (index < 0 || index >= list.length || target < 0 || target >= list.length) return list;
  const next = [...list];
  const [item] = next.splice(index, 1);
  if (item) next.splice(target, 0, item);
  return next;
}

export function updateClass(
  list: ClassDraft[],
  index: number,
  change: Partial<ClassDraft>,
): ClassDraft[] {
  return list.map((item, i) => (i === index ? { ...item, ...change } : item));
}

export function removeClass(list: ClassDraft[], index: number): ClassDraft[] {
  return list.filter((_, i) => i !== index);
}

/** What is wrong with the list as the server would see it, or null. */
export function classListProblem(list: ClassDraft[]): string | null {
  const seen = new Set<string>();
  for (const [i, item] of list.entries()) {
    const name = item.name.trim();
    if (!name) return `Class ${i + 1} has no name.`;
    if (name.length > MAX_CLASS_NAME) return `Class "${name.slice(0, 20)}…" is too long.`;
    const key = name.toLowerCase();
    if (seen.has(key)) return `The class "${name}" is in the list twice.`;
    seen.add(key);
  }
  return null;
}
