// placeholder: written by its helper
export async function render(main) {
  main.textContent = "job";
}
