import { act, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { createMemoryRouter, RouterProvider } from "react-router";
import { describe, expect, it } from "vitest";
import { KeptEditsNotice } from "./KeptEditsNotice";

type Listener = (conflicts: { imageId: number; projectId: number }[]) => void;

describe("KeptEditsNotice", () => {
  it("links each kept edit that met a conflict to its image, and can be dismissed", async () => {
    let push: Listener = () => undefined;
    let stopped = false;
    const load = async () => (listener: Listener) => {
      push = listener;
      return () => {
        stopped = true;
      };
    };
    const router = createMemoryRouter([{ path: "*", element: <KeptEditsNotice load={load} /> }]);
    const { unmount } = render(<RouterProvider router={router} />);
    await act(async () => {
      await new Promise((resolve) => setTimeout(resolve, 20));
    });
    expect(screen.queryByRole("complementary", { name: "Unsaved edits" })).toBeNull();
    act(() => push([{ imageId: 7, projectId: 3 }]));
    const notice = await screen.findByRole("complementary", { name: "Unsaved edits" });
    expect(notice).toHaveTextContent("someone else changed the image meanwhile");
    expect(screen.getByRole("link", { name: "Image 7" })).toHaveAttribute("href", "/projects/3/images/7");
    await userEvent.click(screen.getByRole("button", { name: "Dismiss" }));
    expect(screen.queryByRole("complementary", { name: "Unsaved edits" })).toBeNull();
    unmount();
    expect(stopped).toBe(true);
  });
});
