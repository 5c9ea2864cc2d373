(function(){
var main=document.getElementById('main'),stale=document.getElementById('stale'),
sc=document.getElementById('stale-clock'),every={{ refresh_s }}*1000,lang={{ lang|tojson }};
function tick(){
fetch('/fragment?lang='+lang,{cache:'no-store'}).then(function(r){
if(!r.ok){throw new Error(r.status);}return r.text();
}).then(function(h){main.innerHTML=h;stale.hidden=true;}).catch(function(){
var c=main.querySelector('[data-clock]');sc.textContent=c?c.getAttribute('data-clock'):'';stale.hidden=false;
}).then(function(){setTimeout(tick,every);});
}
setTimeout(tick,every);
})();
