(function(){
var V={{ view|tojson }},lang={{ lang|tojson }},every={{ poll_ms }},$=function(id){return document.getElementById(id);},
NS='http://www.w3.org/2000/svg';
function el(tag,cls,text){var e=document.createElement(tag);if(cls){e.className=cls;}
if(text!==undefined&&text!==null){e.textContent=String(text);}return e;}
function svg(tag,attrs){var e=document.createElementNS(NS,tag);
for(var k in attrs){e.setAttribute(k,String(attrs[k]));}return e;}
function fill(id,nodes){var b=$(id);b.replaceChildren.apply(b,nodes);}
function render(v){
$('scenario').textContent=v.scenario;$('meta').textContent=v.meta;$('clock').textContent=v.clock;
$('prog-fill').style.width=(v.progress*100).toFixed(1)+'%';$('prog-text').textContent=v.progress_text;
$('done').textContent=v.done;$('done').hidden=!v.done;
var vd=v.verdict;$('verdict').hidden=!vd;if(vd){$('verdict').className='verdict '+(vd.ok?'pass':'fail');
$('verdict-text').textContent=vd.text;$('verdict-reports').textContent=vd.reports;$('verdict-stop').textContent=vd.stop;}
fill('locker-list',v.lockers.length?v.lockers.map(function(lk){
var d=el('div','locker'+(lk.online?'':' off'));d.dataset.device=lk.device;
var h=el('h3',null,lk.head);h.appendChild(el('span','counts',lk.counts));d.appendChild(h);
if(lk.note){d.appendChild(el('p','note',lk.note));}
var g=el('ol','grid');lk.compartments.forEach(function(c){
var li=el('li','c st-'+c.css);li.dataset.id=c.id;li.dataset.state=c.state_attr;li.title=c.label;
li.appendChild(el('b',null,c.id));if(c.size){li.appendChild(el('span','size',c.size));}
li.appendChild(el('em',null,c.label));g.appendChild(li);});
d.appendChild(g);return d;}):[el('p','none',v.no_lockers)]);
fill('device-list',v.devices.map(function(d){var li=el('li','dev '+(d.online?'on':'off'));
li.dataset.device=d.device;li.appendChild(el('span','name',d.device));li.appendChild(el('span','kind',d.kind));
li.appendChild(el('span','st',(d.online?'\u25cf ':'\u2715 ')+d.status));return li;}));
$('backlog-count').textContent=v.backlog.count;$('backlog-detail').textContent=v.backlog.detail;
fill('spark',v.spark?[svg('polyline',{points:v.spark,fill:'none',stroke:'#0b4f8a','stroke-width':2})]:[]);
fill('ledger-tiles',v.ledger.map(function(h){var d=el('div','tile');d.dataset.hop=h.hop;
d.appendChild(el('span','num',h.n));d.appendChild(el('span','cap',h.label));return d;}));
fill('alarm-list',v.alarms.length?v.alarms.map(function(a){var li=el('li','alarm',a.text);
li.appendChild(el('span','meta',a.device+' \u00b7 '+a.clock));return li;}):[el('li','none',v.no_alarms)]);
var fs=[svg('rect',{x:0,y:0,width:1000,height:40,fill:'#fafafa'})];
v.faults.forEach(function(f){fs.push(svg('rect',{x:(f.x0*1000).toFixed(1),y:6,
width:Math.max(3,(f.x1-f.x0)*1000).toFixed(1),height:28,fill:f.active?'#c62828':'#9e9e9e',
'fill-opacity':f.active?0.85:0.5,'class':'fw'+(f.active?' active':'')}));});
v.ticks.forEach(function(k){fs.push(svg('line',{x1:(k.x*1000).toFixed(1),x2:(k.x*1000).toFixed(1),y1:0,y2:40,
stroke:'#bbb','stroke-width':1,'class':'tick'}));});
fill('fault-ticks',v.ticks.map(function(k){var s=el('span','tick',k.label);s.style.left=(k.x*100).toFixed(2)+'%';
return s;}));
fs.push(svg('line',{x1:(v.now*1000).toFixed(1),x2:(v.now*1000).toFixed(1),y1:0,y2:40,stroke:'#0b4f8a',
'stroke-width':3}));fill('fault-svg',fs);
fill('fault-list',v.faults.length?v.faults.map(function(f){var li=el('li','fault '+f.state,f.label);
li.appendChild(el('span','badge',f.status));
li.appendChild(el('span','meta',f.when+(f.detail?' \u00b7 '+f.detail:'')));
return li;}):[el('li','none',v.no_faults)]);
}
function tick(){fetch('/api/snapshot?lang='+lang,{cache:'no-store'}).then(function(r){
if(!r.ok){throw new Error(r.status);}return r.json();}).then(function(s){
render(s.view);$('stale').hidden=true;
}).catch(function(){$('stale').hidden=false;}).then(function(){setTimeout(tick,every);});}
render(V);setTimeout(tick,every);
})();
