"""Layout checks shared by the browser tests of the handheld's page
(tests/handheld/test_handheld_layout.py) and the clerk's page
(tests/gateway/test_clerk_layout.py): contrast computed from the browser's own styles,
horizontal overflow, and what lies below the fold (screens at 360×640 and
390×844, contrast 7:1 or more for text and borders).

Contrast is WCAG 2's: relative luminance L = 0.2126 R + 0.7152 G + 0.0722 B of the
linearised sRGB channels (c/12.92 up to 0.03928, else ((c+0.055)/1.055)^2.4), and the
ratio (L1 + 0.05) / (L2 + 0.05). The background behind an element is composited from the
root down through every ancestor's background colour (alpha included).
"""

from __future__ import annotations

from typing import Any

MIN_CONTRAST = 7.0

#: Colour helpers for the scripts below (and the handheld's MEASURE): lin, lum, ratio,
#: parse (a CSS colour to [r, g, b, a]), over (alpha compositing), behind (the colour
#: behind an element), shown (laid out and visible) and name (an element for a message).
COLOUR_JS = """
function lin(c){c/=255;return c<=0.03928?c/12.92:Math.pow((c+0.055)/1.055,2.4);}
function lum(c){return 0.2126*lin(c[0])+0.7152*lin(c[1])+0.0722*lin(c[2]);}
function ratio(a,b){var x=lum(a),y=lum(b);return (Math.max(x,y)+0.05)/(Math.min(x,y)+0.05);}
function parse(s){var m=/rgba?\\(([^)]+)\\)/.exec(s); if(!m)return [0,0,0,0];
  var p=m[1].split(/[\\s,\\/]+/).filter(Boolean).map(parseFloat); return [p[0],p[1],p[2],p.length>3?p[3]:1];}
function over(top,under){return [0,1,2].map(function(k){return top[k]*top[3]+under[k]*(1-top[3]);});}
function behind(el){var chain=[];for(var e=el;e;e=e.parentElement){chain.push(e);}
  var c=[255,255,255];
  for(var i=chain.length-1;i>=0;i--){var b=parse(getComputedStyle(chain[i]).backgroundColor);
    if(b[3]>0){c=over(b,c);}}
  return c;}
function name(el){return el.tagName.toLowerCase()+(el.id?'#'+el.id:'')+
  (el.className&&typeof el.className==='string'?'.'+el.className.split(' ').join('.'):'')+
  ' "'+(el.textContent||el.placeholder||'').trim().slice(0,30)+'"';}
function shown(el){if(!el)return false; var r=el.getBoundingClientRect();
  return r.width>0&&r.height>0&&(!el.checkVisibility||el.checkVisibility({visibilityProperty:true}));}
"""

#: Every shown element's own text, every field's border (against what is behind the field)
#: and placeholder, below ``min``; and every element that sticks out of the screen's width.
PAGE_JS = """(min) => {""" + COLOUR_JS + """
var W=document.documentElement.clientWidth, out={contrast:[],overflow:[],n_text:0,n_fields:0};
document.querySelectorAll('body *').forEach(function(el){
  if(!shown(el)||el.closest('svg,video,img'))return;
  var cs=getComputedStyle(el), r=el.getBoundingClientRect(), bg=behind(el);
  if(r.right>W+0.5||r.left<-0.5){out.overflow.push(name(el)+' x '+r.left+'..'+r.right);}
  var own=Array.prototype.some.call(el.childNodes,function(n){return n.nodeType===3&&n.textContent.trim();});
  if(own){out.n_text++; var k=ratio(over(parse(cs.color),bg),bg);
    if(k<min){out.contrast.push(name(el)+' text '+k.toFixed(2));}}
  if((el.tagName==='INPUT'&&el.type!=='hidden')||el.tagName==='SELECT'||el.tagName==='TEXTAREA'){out.n_fields++;
    var pb=behind(el.parentElement), k2=ratio(over(parse(cs.borderTopColor),pb),pb);
    if(parseFloat(cs.borderTopWidth)>0&&k2<min){out.contrast.push(name(el)+' border '+k2.toFixed(2));}
    if(parseFloat(cs.borderTopWidth)===0){out.contrast.push(name(el)+' has no border');}
    var ph=getComputedStyle(el,'::placeholder').color, k3=ratio(over(parse(ph),bg),bg);
    if(el.placeholder&&k3<min){out.contrast.push(name(el)+' placeholder '+k3.toFixed(2));}}
});
out.scroll_width=document.documentElement.scrollWidth; out.width=W;
return out;}"""

#: The bottom of each selector's elements below the screen's height (or missing).
FOLD_JS = """sels => { var out=[];
  sels.forEach(function(s){var els=document.querySelectorAll(s);
    if(!els.length){out.push(s+' missing');}
    els.forEach(function(e){var r=e.getBoundingClientRect();
      if(r.height===0||r.bottom>innerHeight+0.5){out.push(s+' bottom '+r.bottom+' > '+innerHeight);}});});
  return out;}"""


def check_page(page: Any, where: str, min_contrast: float = MIN_CONTRAST, fields: int = 1) -> dict[str, Any]:
    """Contrast and overflow of the whole page: fails with what is wrong. ``fields``: at
    least that many form fields were measured."""
    m: dict[str, Any] = page.evaluate(PAGE_JS, min_contrast)
    assert m["scroll_width"] <= m["width"], (where, m["scroll_width"], m["width"])
    assert not m["overflow"], (where, m["overflow"])
    assert not m["contrast"], (where, m["contrast"])
    assert m["n_text"] > 5 and m["n_fields"] >= fields, m  # it measured something
    return m


def above_the_fold(page: Any, where: str, *sels: str) -> None:
    """Each selector's elements whole on the first screen, without scrolling."""
    bad = page.evaluate(FOLD_JS, list(sels))
    assert not bad, (where, bad)
