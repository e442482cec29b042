"use strict";
document.getElementById("live").textContent = "";
window.migrec.ready();
