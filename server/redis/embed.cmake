# embed.cmake - turn the ledger's Redis scripts into C strings (cmake -P).
#   cmake -DSRC=<server/redis> -DOUT=<file.c> -P embed.cmake
# Each script is common.lua followed by its own file, so the text SCRIPT LOAD sends
# is self-contained and the shared helpers exist once in the source tree; the ones
# that charge or release a hold (charging) get charge.lua between the two. The
# shared text runs at every call, so a script carries only the helpers it uses.
set(names reserve settle cancel sweep budget state record hold defs key keyring journal rollups admin)
set(charging settle cancel sweep)
file(READ ${SRC}/common.lua common HEX)
file(READ ${SRC}/charge.lua charge HEX)
set(body "/* Generated from the scripts in server/redis/ by server/redis/embed.cmake: do not edit. */\n")
string(APPEND body "#include \"redis_scripts.h\"\n\n")
foreach(name ${names})
  file(READ ${SRC}/${name}.lua text HEX)
  set(shared "${common}")
  list(FIND charging ${name} at)
  if(at GREATER -1)
    string(APPEND shared "${charge}")
  endif()
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${shared}${text}")
  string(APPEND body "static const char text_${name}[] = {${bytes} 0x00};\n")
endforeach()
string(APPEND body "\nconst char *const dsc__redis_script_texts[DSC_REDIS_SCRIPT_COUNT] = {\n")
foreach(name ${names})
  string(APPEND body "    text_${name},\n")
endforeach()
string(APPEND body "};\n")
file(WRITE ${OUT}.tmp "${body}")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different ${OUT}.tmp ${OUT})
