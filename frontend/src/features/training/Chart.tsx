// A line chart drawn by uPlot (canvas): one per group of metrics. The plot is hidden
// from assistive technology; the figure's caption names it, its description sums it up
// in words, and the pages put the numbers in a table next to it.
import { useEffect, useId, useLayoutEffect, useRef } from "react";
import uPlot from "uplot";
import { plainNumber } from "./metrics";
import "uplot/dist/uPlot.min.css";

export interface Series {
  label: string;
  color: string;
  dash?: number[];
}

interface Props {
  title: string;
  description: string;
  series: Series[];
  data: uPlot.AlignedData;
  height?: number;
  /** A fixed y range (for scores in [0, 1]); by default it fits the data. */
  yRange?: [number, number];
  /** Called after every draw, with how many x values the plot holds. */
  onDraw?: (points: number) => void;
}

// jsdom (the unit tests) has no canvas: the figure renders without its plot.
const canDraw = typeof navigator !== "undefined" && !/jsdom/i.test(navigator.userAgent);

export const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f", "#854d0e", "#475569"];

// Epochs are whole numbers: no tick at 1.5.
const EPOCH_TICKS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000];

// Ticks and legend values without Intl (uPlot's default): see plainNumber.
const ticks = (_: uPlot, splits: number[]) => splits.map((v) => (v == null ? "" : plainNumber(v)));
const legendValue = (_: uPlot, value: number | null) => (value == null ? "--" : plainNumber(value));

export function Chart({ title, description, series, data, height = 240, yRange, onDraw }: Props) {
  const captionId = useId();
  const descriptionId = useId();
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const drawn = useRef(onDraw);
  drawn.current = onDraw;
  const latest = useRef(data);
  latest.current = data;
  const shown = useRef<uPlot.AlignedData | null>(null);
  // A new plot only when the lines change (a run added to an overlay), not per epoch.
  const shape = JSON.stringify([series, yRange]);

  // Made before the browser paints: the page's first frame has its charts (no frame
  // of empty figures, laid out and painted for nothing, before them).
  useLayoutEffect(() => {
    const element = box.current;
    if (!canDraw || !element) return;
    const [lines, range] = JSON.parse(shape) as [Series[], [number, number] | undefined];
    const made = new uPlot(
      {
        width: Math.max(element.clientWidth, 320),
        height,
        scales: { x: { time: false }, ...(range ? { y: { range } } : {}) },
        axes: [
          { label: "Epoch", incrs: EPOCH_TICKS, values: ticks },
          { values: ticks },
        ],
        cursor: { drag: { x: true, y: false } },
        series: [
          { label: "Epoch", value: legendValue },
          ...lines.map((s) => ({
            label: s.label,
            stroke: s.color,
            width: 1.5,
            dash: s.dash,
            spanGaps: true,
            points: { show: false },
            value: legendValue,
          })),
        ],
        hooks: { draw: [(u: uPlot) => drawn.current?.(u.data[0].length)] },
      },
      latest.current,
      element,
    );
    plot.current = made;
    shown.current = latest.current;
    const resize = new ResizeObserver(() => {
      const width = Math.max(element.clientWidth, 320);
      if (width !== made.width) made.setSize({ width, height });
    });
    resize.observe(element);
    return () => {
      resize.disconnect();
      made.destroy();
      plot.current = null;
    };
  }, [shape, height]);

  useEffect(() => {
    if (!plot.current || shown.current === data) return;
    shown.current = data;
    plot.current.setData(data);
  }, [data]);

  return (
    <figure className="chart" aria-labelledby={captionId} aria-describedby={descriptionId}>
      <figcaption id={captionId}>{title}</figcaption>
      <p id={descriptionId} className="visually-hidden">
        {description}
      </p>
      <div ref={box} className="chart-plot" aria-hidden="true" />
    </figure>
  );
}
