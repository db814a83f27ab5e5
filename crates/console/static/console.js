// Progressive enhancement only: every page works without this script.
// A confirmation rendered by the server opens as a modal dialog (focus stays inside it), and
// Escape cancels it the way its Cancel link does.
document.addEventListener("DOMContentLoaded", () => {
  const dialog = document.querySelector("dialog.confirm[open]");
  if (!dialog || typeof dialog.showModal !== "function") {
    return;
  }
  dialog.close();
  dialog.showModal();
  const cancel = dialog.querySelector("[data-cancel]");
  dialog.addEventListener("cancel", (event) => {
    event.preventDefault();
    if (cancel) {
      window.location.assign(cancel.getAttribute("href"));
    }
  });
});
