// The box editor and the review queue against a real `oculab standalone`.
import { expect, screenshot, test } from "./fixtures";
import {
  addMember,
  annotations,
  canvas,
  createUser,
  drag,
  expectSaved,
  newPage,
  openEditor,
  ownServer,
  predict,
  seedProject,
  session,
  unique,
  useSession,
} from "./editor-support";

const IMAGE = { width: 800, height: 600 };

test("draw a box with the mouse, change its class by key, reload and see it", async ({ page, browser, baseURL }) => {
  await useSession(page, await session(browser, baseURL ?? ""));
  const { projectId, imageIds } = await seedProject(page.request);
  const imageId = imageIds[0] as number;
  await openEditor(page, projectId, imageId);
  // The box tool is on when the editor opens.
  await expect(page.getByRole("button", { name: "Box tool" })).toHaveAttribute("aria-pressed", "true");
  await expect(page.getByRole("radio", { name: "1 car" })).toBeChecked();

  await drag(page, IMAGE, { x: 200, y: 150 }, { x: 440, y: 330 });
  await expect(page.getByTestId("box-counts")).toHaveText("1 box");
  await expect(page.getByRole("region", { name: "Selection" })).toContainText("1 selected: car");
  await page.keyboard.press("2");
  await expect(page.getByRole("region", { name: "Selection" })).toContainText("1 selected: person");
  await expect(page.getByRole("radio", { name: "2 person" })).toBeChecked();
  await expectSaved(page);

  const saved = await annotations(page.request, imageId);
  expect(saved.boxes).toHaveLength(1);
  const box = saved.boxes[0]!;
  expect(box.class_id).toBe(1);
  expect(box.status).toBe("accepted");
  expect(box.x).toBeCloseTo(200 / 800, 1);
  expect(box.w).toBeCloseTo(240 / 800, 1);
  expect(saved.status).toBe("reviewed");

  // Undo and redo by keyboard; the save follows.
  await page.keyboard.press("Control+z");
  await expect(page.getByRole("region", { name: "Selection" })).toContainText("1 selected: car");
  await page.keyboard.press("Control+Shift+z");
  await expect(page.getByRole("region", { name: "Selection" })).toContainText("1 selected: person");
  await expectSaved(page);
  expect((await annotations(page.request, imageId)).boxes[0]?.class_id).toBe(1);

  await page.reload();
  await expect(canvas(page)).toHaveAttribute("data-ready", "true");
  await expect(page.getByTestId("box-counts")).toHaveText("1 box");
  // Click the box: it is there, of class person.
  const { x, y } = await (async () => {
    const b = await canvas(page).boundingBox();
    const scale = Math.min((b!.width - 32) / 800, (b!.height - 32) / 600);
    return { x: b!.x + (b!.width - 800 * scale) / 2 + 320 * scale, y: b!.y + (b!.height - 600 * scale) / 2 + 240 * scale };
  })();
  await page.mouse.click(x, y);
  await expect(page.getByRole("region", { name: "Selection" })).toContainText("1 selected: person");

  // The help overlay lists the shortcuts.
  await page.keyboard.press("?");
  const help = page.getByRole("dialog", { name: "Keyboard shortcuts" });
  await expect(help).toBeVisible();
  await expect(help.getByRole("row", { name: /Undo/ }).first()).toBeVisible();
  await screenshot(page, "editor-help");
  await help.getByRole("button", { name: "Close" }).click();
  await expect(help).toBeHidden();
  await screenshot(page, "editor-box-drawn");
});

test("by keyboard and mouse: nudge, resize, copy/paste, marquee, delete/undo, zoom, the select tool", async ({
  page,
  browser,
  baseURL,
}) => {
  await useSession(page, await session(browser, baseURL ?? ""));
  const { projectId, imageIds } = await seedProject(page.request);
  const imageId = imageIds[0] as number;
  await openEditor(page, projectId, imageId);
  const counts = page.getByTestId("box-counts");
  const selection = page.getByRole("region", { name: "Selection" });
  const saved = async () => {
    await expectSaved(page);
    return (await annotations(page.request, imageId)).boxes;
  };

  await drag(page, IMAGE, { x: 100, y: 100 }, { x: 300, y: 250 });
  const [drawn] = await saved();
  // Nudges: 1 image pixel per arrow, 10 with Shift; the size stays.
  for (let i = 0; i < 3; i++) await page.keyboard.press("ArrowRight");
  await page.keyboard.press("Shift+ArrowDown");
  await expect(page.getByRole("status").filter({ hasText: /saved|Saving|Unsaved/ })).not.toHaveText("All changes saved");
  let [box] = await saved();
  expect(box!.x * 800).toBeCloseTo(drawn!.x * 800 + 3, 6);
  expect(box!.y * 600).toBeCloseTo(drawn!.y * 600 + 10, 6);
  expect(box!.w).toBe(drawn!.w);
  const before = { x: box!.x * 800, y: box!.y * 600, w: box!.w * 800, h: box!.h * 600 };

  // Resize with the Transformer's bottom-right anchor: 50 × 40 image pixels larger.
  await drag(page, IMAGE, { x: before.x + before.w, y: before.y + before.h }, { x: before.x + before.w + 50, y: before.y + before.h + 40 });
  [box] = await saved();
  expect(box!.w * 800).toBeCloseTo(before.w + 50, -1);
  expect(box!.h * 600).toBeCloseTo(before.h + 40, -1);
  expect(box!.x * 800).toBeCloseTo(before.x, 0);

  // Copy and paste: a second box, 12 pixels off.
  await page.keyboard.press("Control+c");
  await page.keyboard.press("Control+v");
  await expect(counts).toHaveText("2 boxes");
  const two = await saved();
  expect(two[1]!.x * 800 - two[0]!.x * 800).toBeCloseTo(12, 3);

  // Marquee with Shift selects both; Delete removes them; Ctrl+Z brings them back.
  await page.keyboard.press("Escape");
  await expect(page.getByText("No box selected.")).toBeVisible();
  await page.keyboard.down("Shift");
  await drag(page, IMAGE, { x: 20, y: 20 }, { x: 780, y: 580 });
  await page.keyboard.up("Shift");
  await expect(selection).toContainText("2 selected");
  await page.keyboard.press("Delete");
  await expect(counts).toHaveText("0 boxes");
  await page.keyboard.press("Control+z");
  await expect(counts).toHaveText("2 boxes");
  expect(await saved()).toHaveLength(2);

  // Zoom: the wheel zooms in around the pointer, 0 fits, Z is 1:1.
  const zoom = page.getByRole("status", { name: "Zoom level" });
  const fitted = await zoom.textContent();
  const centre = await canvas(page).boundingBox();
  await page.mouse.move(centre!.x + centre!.width / 2, centre!.y + centre!.height / 2);
  await page.mouse.wheel(0, -300);
  await expect(zoom).not.toHaveText(fitted ?? "");
  await page.keyboard.press("z");
  await expect(zoom).toHaveText("100%");
  await page.keyboard.press("0");
  await expect(zoom).toHaveText(fitted ?? "");
  // Pan with the right button, then fit again.
  await page.mouse.move(centre!.x + 300, centre!.y + 300);
  await page.mouse.down({ button: "right" });
  await page.mouse.move(centre!.x + 200, centre!.y + 250, { steps: 4 });
  await page.mouse.up({ button: "right" });
  await page.getByRole("button", { name: "Fit image" }).click();

  // The select tool: a press on a box that is not selected drags it at once.
  await page.keyboard.press("Escape");
  await page.keyboard.press("v");
  await expect(page.getByRole("button", { name: "Select tool" })).toHaveAttribute("aria-pressed", "true");
  const first = (await saved())[0]!;
  const grab = { x: first.x * 800 + 5, y: first.y * 600 + 5 }; // not on the pasted copy
  await drag(page, IMAGE, grab, { x: grab.x + 200, y: grab.y + 100 });
  const moved = (await saved())[0]!;
  expect(moved.x * 800 - first.x * 800).toBeCloseTo(200, -1);
  expect(moved.w).toBeCloseTo(first.w, 9);
  await screenshot(page, "editor-keyboard-mouse");
});

test("two people edit one image: the second gets the conflict dialog and loses nothing", async ({
  page,
  browser,
  baseURL,
}) => {
  const state = await session(browser, baseURL ?? "");
  await useSession(page, state);
  const { projectId, imageIds } = await seedProject(page.request);
  const imageId = imageIds[0] as number;
  const problems: string[] = [];
  const other = await newPage(browser, baseURL ?? "", state, problems);

  await openEditor(page, projectId, imageId);
  await openEditor(other, projectId, imageId);
  // The first person draws and saves.
  await drag(page, IMAGE, { x: 80, y: 80 }, { x: 240, y: 200 });
  await expectSaved(page);
  // The second, still on revision 0, draws another box of another class.
  await other.keyboard.press("3");
  await drag(other, IMAGE, { x: 500, y: 300 }, { x: 700, y: 500 });
  const dialog = other.getByRole("dialog", { name: "Someone else saved this image" });
  await expect(dialog).toBeVisible({ timeout: 20_000 });
  await expect(dialog.getByRole("region", { name: "Their changes" })).toContainText("1 added, 0 removed, 0 changed");
  await expect(dialog.getByRole("region", { name: "Your changes" })).toContainText("1 added");
  await expect(dialog.getByRole("region", { name: "Their changes" })).toContainText("Added car");
  await screenshot(other, "editor-conflict");
  await dialog.getByRole("button", { name: "Merge both" }).click();
  await expect(dialog).toBeHidden();
  await expectSaved(other);
  await expect(other.getByTestId("box-counts")).toHaveText("2 boxes");

  const saved = await annotations(page.request, imageId);
  expect(saved.revision).toBe(2);
  expect(saved.boxes.map((b) => b.class_id).sort()).toEqual([0, 2]);
  await screenshot(other, "editor-conflict-merged");
  await other.context().close();
  expect(problems).toEqual([]);
});

test("the server stops mid-edit: the edit waits in the browser and is saved when it is back", async ({
  browser,
}) => {
  test.setTimeout(240_000);
  const server = await ownServer();
  const problems: string[] = [];
  try {
    const state = await session(browser, server.url);
    const page = await newPage(browser, server.url, state, problems);
    const { projectId, imageIds } = await seedProject(page.request);
    const imageId = imageIds[0] as number;
    await openEditor(page, projectId, imageId);
    await drag(page, IMAGE, { x: 100, y: 100 }, { x: 300, y: 250 });
    await expectSaved(page);

    await server.stop();
    await page.keyboard.press("2"); // the selected box becomes a person
    await drag(page, IMAGE, { x: 450, y: 300 }, { x: 650, y: 520 });
    const status = page.getByRole("status").filter({ hasText: /saved|Saving|Unsaved|Offline/ });
    await expect(status).toHaveText("Offline: changes kept in this browser, retrying", { timeout: 20_000 });
    await screenshot(page, "editor-offline");
    // The edit is kept in IndexedDB: a reload now would find it.
    const kept = await page.evaluate(
      (id) =>
        new Promise<number>((done, fail) => {
          const open = indexedDB.open("oculab-editor");
          open.onerror = () => fail(open.error ?? new Error("indexedDB.open failed"));
          open.onsuccess = () => {
            const get = open.result.transaction("pending").objectStore("pending").get(id);
            get.onsuccess = () => done(((get.result as { boxes?: unknown[] } | undefined)?.boxes ?? []).length);
          };
        }),
      imageId,
    );
    expect(kept).toBe(2);

    await server.start();
    await expectSaved(page);
    const saved = await annotations(page.request, imageId);
    // Both boxes, and both persons: the key changed the first and the class drawn next.
    expect(saved.boxes.map((b) => b.class_id)).toEqual([1, 1]);
    await screenshot(page, "editor-back-online");
    await page.context().close();
  } finally {
    await server.dispose();
  }
  expect(problems).toEqual([]);
});

test("the review queue shows the least confident image first; A accepts and moves on, E opens the editor", async ({
  page,
  browser,
  baseURL,
}) => {
  await useSession(page, await session(browser, baseURL ?? ""));
  const { projectId, imageIds } = await seedProject(page.request, { count: 3, prefix: "Review" });
  const [sure, unsure, middle] = imageIds as [number, number, number];
  await predict(page.request, sure, [{ class_id: 0, x: 0.1, y: 0.1, w: 0.3, h: 0.3, confidence: 0.93 }]);
  await predict(page.request, unsure, [
    { class_id: 1, x: 0.5, y: 0.4, w: 0.2, h: 0.4, confidence: 0.31 },
    { class_id: 0, x: 0.1, y: 0.5, w: 0.2, h: 0.2, confidence: 0.88 },
  ]);
  await predict(page.request, middle, [{ class_id: 2, x: 0.2, y: 0.2, w: 0.5, h: 0.5, confidence: 0.6 }]);

  await page.goto(`/projects/${projectId}`);
  await page.getByRole("link", { name: "Review predictions" }).click();
  await expect(page).toHaveURL(new RegExp(`/projects/${projectId}/review$`));
  await expect(page.getByRole("heading", { name: "Review predictions" })).toBeVisible();
  await expect(page.getByText("3 waiting")).toBeVisible();
  const figure = page.getByRole("figure");
  await expect(figure.getByRole("img", { name: "img_001.png" })).toBeVisible();
  await expect(figure).toContainText("2 predicted boxes, lowest confidence 0.31");
  await screenshot(page, "review-queue");

  await page.keyboard.press("a");
  await expect(figure.getByRole("img", { name: "img_002.png" })).toBeVisible();
  await expect(page.getByText("Image 2 of 3")).toBeVisible();
  const accepted = await annotations(page.request, unsure);
  expect(accepted.status).toBe("reviewed");
  expect(accepted.boxes.map((b) => b.status)).toEqual(["accepted", "accepted"]);

  await page.keyboard.press("e");
  await expect(page).toHaveURL(new RegExp(`/projects/${projectId}/images/${middle}$`));
  await expect(canvas(page)).toHaveAttribute("data-ready", "true");
  await expect(page.getByTestId("box-counts")).toHaveText("1 box, 1 predicted");
  // In the editor: accept the prediction by selecting it and pressing A.
  await page.keyboard.press("Control+a");
  await page.keyboard.press("a");
  await expectSaved(page);
  expect((await annotations(page.request, middle)).boxes[0]?.status).toBe("accepted");
  // N: the next image not reviewed (wrapping to the project's start).
  await page.keyboard.press("n");
  await expect(page).toHaveURL(new RegExp(`/projects/${projectId}/images/${sure}$`));
  await expect(canvas(page)).toHaveAttribute("data-ready", "true");
  // The threshold hides predictions below it.
  await page.getByRole("slider", { name: /Confidence threshold/ }).fill("0.95");
  await expect(page.getByTestId("box-counts")).toHaveText("1 box, 1 predicted (1 below the threshold)");
  await screenshot(page, "editor-threshold");
});

test("a viewer sees no edit controls and cannot change boxes", async ({ page, browser, baseURL }) => {
  await useSession(page, await session(browser, baseURL ?? ""));
  const { projectId, imageIds } = await seedProject(page.request, { prefix: "Viewer" });
  const imageId = imageIds[0] as number;
  await predict(page.request, imageId, [{ class_id: 0, x: 0.2, y: 0.2, w: 0.3, h: 0.3, confidence: 0.7 }]);
  const username = unique("viewer").replace(" ", "-");
  const password = "viewer-password-123";
  await addMember(page.request, projectId, await createUser(page.request, username, password), "viewer");

  const problems: string[] = [];
  const viewer = await newPage(browser, baseURL ?? "", await session(browser, baseURL ?? "", username, password), problems);
  await openEditor(viewer, projectId, imageId);
  await expect(viewer.getByRole("note")).toContainText("Read-only");
  for (const name of ["Box tool", "Select tool", "Undo", "Redo", "Accept all", "Reject all", "Delete selected"]) {
    await expect(viewer.getByRole("button", { name })).toHaveCount(0);
  }
  await expect(viewer.getByRole("radio")).toHaveCount(0);
  await expect(viewer.getByRole("slider")).toHaveCount(0);
  await expect(viewer.getByText(/All changes saved|Unsaved changes/)).toHaveCount(0); // nothing to save
  // Zoom and navigation stay.
  await expect(viewer.getByRole("button", { name: "Fit image" })).toBeVisible();
  // Drawing and keys change nothing.
  await drag(viewer, IMAGE, { x: 500, y: 400 }, { x: 700, y: 550 });
  await viewer.keyboard.press("Control+a");
  await viewer.keyboard.press("Delete");
  await expect(viewer.getByTestId("box-counts")).toHaveText("1 box, 1 predicted");
  await screenshot(viewer, "editor-viewer");
  // The review queue: no accept for viewers.
  await viewer.goto(`/projects/${projectId}/review`);
  await expect(viewer.getByRole("figure")).toBeVisible();
  await expect(viewer.getByRole("button", { name: /Accept and next/ })).toHaveCount(0);
  await viewer.keyboard.press("a");
  expect((await annotations(page.request, imageId)).boxes[0]?.status).toBe("predicted");
  await viewer.context().close();
  expect(problems).toEqual([]);
});

test("a member of another project gets 'not found' for this project's image and queue", async ({
  page,
  browser,
  baseURL,
}) => {
  await useSession(page, await session(browser, baseURL ?? ""));
  const { projectId, imageIds } = await seedProject(page.request, { prefix: "Private" });
  const other = await seedProject(page.request, { prefix: "Elsewhere" });
  const username = unique("outsider").replace(" ", "-");
  const password = "outsider-password-123";
  await addMember(page.request, other.projectId, await createUser(page.request, username, password), "annotator");

  const problems: string[] = [];
  const outsider = await newPage(browser, baseURL ?? "", await session(browser, baseURL ?? "", username, password), problems);
  await outsider.goto(`/projects/${projectId}/images/${imageIds[0]}`);
  await expect(outsider.getByRole("heading", { name: "Not found" })).toBeVisible();
  await expect(outsider.getByRole("application", { name: "Image canvas" })).toHaveCount(0);
  await screenshot(outsider, "editor-not-found");
  // Its own project's image under the other project's address is not found either.
  await outsider.goto(`/projects/${projectId}/images/${other.imageIds[0]}`);
  await expect(outsider.getByRole("heading", { name: "Not found" })).toBeVisible();
  await outsider.goto(`/projects/${projectId}/review`);
  await expect(outsider.getByRole("heading", { name: "Not found" })).toBeVisible();
  // Its own image opens.
  await openEditor(outsider, other.projectId, other.imageIds[0] as number);
  await outsider.context().close();
  expect(problems).toEqual([]);
});


test("edits kept for closed images are saved when the app starts; a conflict stays kept, with a link", async ({
  page,
  browser,
  baseURL,
}) => {
  const state = await session(browser, baseURL ?? "");
  await useSession(page, state);
  const { projectId, imageIds } = await seedProject(page.request, { count: 2 });
  const [fresh, stale] = imageIds as [number, number];
  // Someone saves the second image after this browser's edit of it began (revision 0).
  await predict(page.request, stale, [{ class_id: 1, x: 0.6, y: 0.6, w: 0.2, h: 0.2, confidence: 0.5 }]);
  // A page of the same origin without the app: the edits are in place before it starts.
  await page.goto("/api/health");
  const box = (x: number) => ({
    id: `k${x}`,
    class_id: 2,
    x,
    y: 0.1,
    w: 0.2,
    h: 0.2,
    source: "manual",
    confidence: null,
    status: "accepted",
  });
  // What an editor left in IndexedDB when the tab closed during an outage.
  await page.evaluate(
    ({ edits }) =>
      new Promise<void>((done, fail) => {
        const open = indexedDB.open("oculab-editor", 1);
        open.onupgradeneeded = () => {
          open.result.createObjectStore("pending", { keyPath: "imageId" }).createIndex("project", "projectId");
        };
        open.onerror = () => fail(open.error ?? new Error("indexedDB.open failed"));
        open.onsuccess = () => {
          const tx = open.result.transaction("pending", "readwrite");
          for (const edit of edits) tx.objectStore("pending").put(edit);
          tx.oncomplete = () => {
            open.result.close();
            done();
          };
          tx.onerror = () => fail(tx.error ?? new Error("transaction failed"));
        };
      }),
    {
      edits: [fresh, stale].map((imageId, i) => ({
        imageId,
        projectId,
        baseRevision: 0,
        baseBoxes: [],
        boxes: [box(0.1 + i * 0.3)],
        updatedAt: Date.now() + i,
      })),
    },
  );
  await page.goto("/projects");
  // The first is saved in the background, no editor opened.
  await expect
    .poll(async () => (await annotations(page.request, fresh)).boxes.map((b) => b.class_id), { timeout: 20_000 })
    .toEqual([2]);
  // The second met a newer revision: kept, and the notice links to it.
  const notice = page.getByRole("complementary", { name: "Unsaved edits" });
  await expect(notice).toContainText("someone else changed the image meanwhile");
  expect((await annotations(page.request, stale)).boxes.map((b) => b.class_id)).toEqual([1]);
  await screenshot(page, "kept-edit-conflict-notice");
  await notice.getByRole("link", { name: `Image ${stale}` }).click();
  const dialog = page.getByRole("dialog", { name: "Someone else saved this image" });
  await expect(dialog).toBeVisible({ timeout: 20_000 });
  await dialog.getByRole("button", { name: "Merge both" }).click();
  await expectSaved(page);
  expect((await annotations(page.request, stale)).boxes.map((b) => b.class_id).sort()).toEqual([1, 2]);
  await expect(notice).toBeHidden();
});

test("opened by address, the first frame is painted before the editor renders, where and as the editor paints it", async ({
  browser,
  baseURL,
}) => {
  const state = await session(browser, baseURL ?? "");
  const problems: string[] = [];
  const page = await newPage(browser, baseURL ?? "", state, problems);
  const { projectId, imageIds } = await seedProject(page.request, { prefix: "Early frame" });
  const imageId = imageIds[0] as number;
  await predict(page.request, imageId, [
    { class_id: 0, x: 0.1, y: 0.1, w: 0.3, h: 0.3, confidence: 0.93 },
    { class_id: 1, x: 0.5, y: 0.4, w: 0.2, h: 0.4, confidence: 0.6 },
    { class_id: 2, x: 0.7, y: 0.7, w: 0.1, h: 0.1, confidence: 0.1 }, // under the threshold
  ]);
  // Each first-frame canvas as it appears (painted by then): where, and its pixels.
  await page.addInitScript(() => {
    const seen: { early: boolean; rect: number[]; pixels: number[] }[] = [];
    (window as unknown as { __frames: typeof seen }).__frames = seen;
    new MutationObserver(() => {
      for (const canvas of document.querySelectorAll<HTMLCanvasElement>("canvas.first-frame")) {
        if (canvas.dataset.seen) continue;
        canvas.dataset.seen = "1";
        const r = canvas.getBoundingClientRect();
        const data = canvas.getContext("2d")?.getImageData(0, 0, canvas.width, canvas.height).data ?? [];
        seen.push({ early: canvas.closest(".early-frame") !== null, rect: [r.x, r.y, r.width, r.height], pixels: Array.from(data) });
      }
    }).observe(document, { childList: true, subtree: true });
  });
  await openEditor(page, projectId, imageId);
  const frames = await page.evaluate(() => (window as unknown as { __frames: { early: boolean; rect: number[]; pixels: number[] }[] }).__frames);
  expect(frames.map((f) => f.early)).toEqual([true, false]);
  const [early, editor] = frames as [(typeof frames)[0], (typeof frames)[0]];
  expect(early.rect).toEqual(editor.rect);
  expect(early.pixels.length).toBe(editor.pixels.length);
  const differing = early.pixels.filter((v, i) => Math.abs(v - (editor.pixels[i] ?? 0)) > 2).length;
  expect(differing / early.pixels.length).toBeLessThan(0.001);
  // The first ready mark is the early frame's, the second the editor's; no early frame
  // is left in the page, and none is painted on a move to the next image in the app.
  expect(await page.evaluate(() => performance.getEntriesByName("oculab:editor-ready").length)).toBe(2);
  await expect(page.locator(".early-frame")).toHaveCount(0);
  await expect(page.getByTestId("box-counts")).toContainText("3 boxes");
  await screenshot(page, "editor-after-early-frame");

  // Where the editor's bar may wrap, no early frame: only the editor's own.
  const narrow = await page.context().browser()!.newContext({ baseURL, storageState: state, viewport: { width: 760, height: 700 } });
  const small = await narrow.newPage();
  await small.addInitScript(() => {
    const seen: boolean[] = [];
    (window as unknown as { __early: boolean[] }).__early = seen;
    new MutationObserver(() => {
      for (const canvas of document.querySelectorAll<HTMLCanvasElement>("canvas.first-frame:not([data-seen])")) {
        canvas.dataset.seen = "1";
        seen.push(canvas.closest(".early-frame") !== null);
      }
    }).observe(document, { childList: true, subtree: true });
  });
  await openEditor(small, projectId, imageId);
  expect(await small.evaluate(() => (window as unknown as { __early: boolean[] }).__early)).toEqual([false]);
  await narrow.close();
  expect(problems).toEqual([]);
  await page.context().close();
});
