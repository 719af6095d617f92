import { render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { useState } from "react";
import { describe, expect, it } from "vitest";
import { ClassListEditor } from "./ClassListEditor";
import type { ClassDraft } from "./classList";
import { PALETTE } from "./palette";

let latest: ClassDraft[] = [];
function Harness({ initial = [] }: { initial?: ClassDraft[] }) {
  const [value, setValue] = useState(initial);
  latest = value;
  return <ClassListEditor value={value} onChange={setValue} />;
}

describe("ClassListEditor", () => {
  it("adds classes by button and by Enter, in order, each with a colour", async () => {
    const user = userEvent.setup();
    render(<Harness />);
    const input = screen.getByRole("textbox", { name: "New class names" });
    await user.type(input, "car, person");
    await user.click(screen.getByRole("button", { name: "Add class" }));
    await user.type(input, "bicycle{Enter}");
    const list = screen.getByRole("list", { name: "Classes" });
    expect(within(list).getAllByRole("listitem")).toHaveLength(3);
    expect(screen.getByRole("textbox", { name: "Name of class 2" })).toHaveValue("bicycle");
    expect(input).toHaveValue("");
    expect(latest).toEqual([
      { name: "car", color: PALETTE[0] },
      { name: "person", color: PALETTE[1] },
      { name: "bicycle", color: PALETTE[2] },
    ]);
  });

  it("reorders, recolours and removes by named buttons", async () => {
    const user = userEvent.setup();
    render(
      <Harness
        initial={[
          { name: "car", color: "#111111" },
          { name: "person", color: "#222222" },
        ]}
      />,
    );
    expect(screen.getByRole("button", { name: "Move car up" })).toBeDisabled();
    await user.click(screen.getByRole("button", { name: "Move person up" }));
    expect(latest.map((c) => c.name)).toEqual(["person", "car"]);
    await user.click(screen.getByRole("button", { name: "Remove car" }));
    expect(latest).toEqual([{ name: "person", color: "#222222" }]);
    expect(screen.getByLabelText("Colour of person")).toHaveValue("#222222");
  });

  it("says when a name is already there or a row is blank", async () => {
    const user = userEvent.setup();
    render(<Harness initial={[{ name: "car", color: "#111111" }]} />);
    await user.type(screen.getByRole("textbox", { name: "New class names" }), "Car{Enter}");
    expect(screen.getByRole("alert")).toHaveTextContent(/Not added.*Car/);
    await user.clear(screen.getByRole("textbox", { name: "Name of class 0" }));
    await user.type(screen.getByRole("textbox", { name: "New class names" }), "x{Enter}");
    expect(screen.getByRole("alert")).toHaveTextContent("Class 1 has no name.");
  });
});
