# What the locker's display says, in Simplified Chinese and English.
# Most people at a village locker read Chinese; both lines are shown.

TEXTS = {
    "ready": ("请输入取件码或扫码", "Enter pickup code or scan"),
    "door_open_pickup": ("柜门已开，请取件后关门", "Door open: take your parcel, close the door"),
    "door_open_deposit": ("柜门已开，请放入包裹后关门", "Door open: put the parcel in, close the door"),
    "door_open_return": ("柜门已开，请放入退件后关门", "Door open: put the return in, close the door"),
    "door_open_retrieve": ("柜门已开，请取出包裹后关门", "Door open: take the parcel out, close the door"),
    "door_open_send": ("柜门已开，请放入寄件包裹后关门",
                       "Door open: put the parcel to send in, close the door"),
    "door_open_collect": ("柜门已开，请取出寄件包裹后关门",
                          "Door open: take the outbound parcel out, close the door"),
    "pickup_ok": ("取件完成，谢谢", "Picked up, thank you"),
    "send_ok": ("寄件已投入，快递员将来揽收", "Parcel dropped off: the courier will collect it"),
    "send_empty": ("未检测到包裹，寄件码仍有效", "No parcel detected: your send code still works"),
    "code_used": ("该寄件码已使用", "This send code has been used"),
    "code_expired": ("该寄件码已过期，请重新预约", "This send code has expired: book again"),
    "wrong_code": ("取件码错误", "Wrong pickup code"),
    "bad_code": ("寄件码格式不对", "Not a send code"),
    "locked_out": ("错误次数过多，请稍后再试，或改用键盘/扫码",
                   "Too many wrong codes: try later, or use the keypad/QR scan instead"),
    "courier_ok": ("快递员已登录", "Courier signed in"),
    "bad_badge": ("工牌无效", "Badge not valid"),
    "scan_parcel": ("请扫描包裹条码", "Scan the parcel barcode"),
    "choose_size": ("请选择格口：1小 2中 3大 4特大", "Choose size: 1 S, 2 M, 3 L, 4 XL"),
    "deposit_ok": ("已投递，谢谢", "Deposited, thank you"),
    "invalid_parcel": ("包裹条码无效", "Parcel barcode not valid"),
    "already_in_locker": ("该包裹已在柜中", "Parcel is already in the locker"),
    "full": ("没有合适的空格口", "No free compartment of that size"),
    "no_courier": ("请先登录快递员", "Courier sign-in needed"),
    "retrieved": ("已取出待退回及寄件包裹", "Overdue, return and outbound parcels retrieved"),
    "nothing_to_retrieve": ("没有待取回的包裹", "Nothing to retrieve"),
    "logged_out": ("快递员已退出", "Courier signed out"),
    "door_fault": ("柜门故障，请联系客服", "Door fault: please call support"),
    "outbox_full": ("存储已满，请联系客服", "Storage full: please call support"),
    "busy": ("格口使用中", "Compartment in use"),
    "bad_size": ("格口尺寸无效", "Not a valid size"),
    "time_not_synced": ("正在校准时间，请稍后再试", "Setting the clock: try again in a minute"),
    "unknown_input": ("无法识别的输入", "Input not understood"),
    "error": ("系统错误", "System error"),
}


def line(code, detail=""):
    zh, en = TEXTS.get(code, TEXTS["error"])
    return "D:%s|%s|%s|%s\n" % (code, zh, en, detail)
