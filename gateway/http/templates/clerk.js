(function(){
var box=document.getElementById('feed-list'),lang={{ lang|tojson }};
function tick(){
fetch('/clerk/feed?lang='+lang,{cache:'no-store',credentials:'same-origin'}).then(function(r){
if(!r.ok){throw new Error(r.status);}return r.text();}).then(function(h){box.innerHTML=h;})
.catch(function(){}).then(function(){setTimeout(tick,5000);});
}
setTimeout(tick,5000);
})();
