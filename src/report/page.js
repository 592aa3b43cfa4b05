// Drag across a comparison to move the line between the original and the result.
document.addEventListener("input", function (e) {
  var c = e.target.closest(".cmp");
  if (c) c.style.setProperty("--pos", e.target.value + "%");
});
// How many pictures the browser could show, on <body> (checked by hili's tests, and a reader
// of the page source can see it too).
window.addEventListener("load", function () {
  var imgs = document.images, shown = 0;
  for (var i = 0; i < imgs.length; i++) if (imgs[i].complete && imgs[i].naturalWidth > 0) shown++;
  document.body.setAttribute("data-images", imgs.length);
  document.body.setAttribute("data-loaded", shown);
  document.body.setAttribute("data-comparisons", document.querySelectorAll("section.job").length);
});
